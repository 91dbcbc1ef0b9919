"""`streamcap ha show|remove -c CONFIG`: the Home Assistant discovery configs of this box, and taking them down.

`remove` deletes every retained discovery config of this device under the
discovery prefix, the ones the config would publish now and any left by
cameras or rules removed since (found by reading the retained configs back),
so Home Assistant drops the entities; and the box's own retained messages
(status, camera states, alarm snapshots, also read back), so nothing of it is
left on the broker. It connects the way the publisher does (mqtt_client.py).
"""
from __future__ import annotations

import sys
import threading
import time

from streamcap.config.load import ConfigError, load_config

RETAINED_WAIT_S = 2.0  # the broker sends retained messages right after SUBACK; this is plenty


def register(subparsers) -> None:
    p = subparsers.add_parser("ha", help="Home Assistant discovery: show or remove this box's entities")
    sub = p.add_subparsers(dest="ha_command", metavar="ACTION", required=True)
    for name, func, text in (("show", run_show, "print the discovery configs the config publishes"),
                             ("remove", run_remove, "delete this box's retained discovery configs from the broker")):
        action = sub.add_parser(name, help=text)
        action.add_argument("-c", "--config", required=True, help="config YAML")
        action.set_defaults(func=func)


def _messages(config):
    from streamcap.publish.homeassistant import discovery_messages
    from streamcap.publish.payloads import Topics
    from streamcap.rules.load import load_rules

    rules, _ = load_rules(config.rules.paths, list(config.cameras))
    mqtt = config.mqtt
    return discovery_messages(mqtt.homeassistant.prefix, Topics(mqtt.prefix, config.device_id), config.device_id,
                              list(config.enabled_cameras), rules)


def _load(path):
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    if config.mqtt is None:
        print(f"{path}: no mqtt: section; Home Assistant discovery needs a broker", file=sys.stderr)
        return None
    return config


def run_show(args) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    for message in _messages(config):
        print(f"{message.topic} {message.payload.decode()}")
    return 0


def run_remove(args) -> int:
    from streamcap.publish.base import PublisherUnavailable
    from streamcap.publish.mqtt_client import build_client, connect_args, reason_text, refused
    from streamcap.publish.payloads import Topics

    config = _load(args.config)
    if config is None:
        return 2
    c = config.mqtt
    box = Topics(c.prefix, config.device_id)
    discovery = {m.topic for m in _messages(config)}
    # What the box itself keeps on the broker: its status and, per camera, the last state and alarm snapshot.
    retained = {box.status} | {topic for cam in config.cameras for topic in (box.state(cam), box.snapshot(cam))}
    found: set[str] = set()  # retained messages read back: cameras and rules removed from the config since
    refusals: list[str] = []
    subscribed = threading.Event()
    try:
        client = build_client(c, f"{c.client_id_for(config.device_id)}-ha-remove")
    except PublisherUnavailable as exc:
        print(f"streamcap ha remove: {exc}", file=sys.stderr)
        return 2
    client.on_connect = lambda cl, *_: cl.subscribe(
        [(f"{c.homeassistant.prefix}/+/{config.device_id}/+/config", 1), (f"{box.prefix}/{box.device}/#", 1)])
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _cl, _u, msg: found.add(msg.topic) if msg.retain and msg.payload else None
    client.on_publish = lambda _cl, _u, mid, reason, _p: refusals.append(reason_text(reason)) if refused(reason) else None
    try:
        client.connect(**connect_args(c))
    except OSError as exc:
        print(f"streamcap ha remove: cannot connect to the broker at {c.host}:{c.port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        if not subscribed.wait(10):
            print(f"streamcap ha remove: the broker at {c.host}:{c.port} did not answer", file=sys.stderr)
            return 1
        time.sleep(RETAINED_WAIT_S)
        configs = sorted(discovery | {t for t in found if t.startswith(f"{c.homeassistant.prefix}/")})
        others = sorted((retained | found) - set(configs))
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in configs + others]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    if refusals:
        print(f"streamcap ha remove: the broker refused {len(refusals)} of the {len(infos)} deletions "
              f"({refusals[0]}); check its ACL for this client", file=sys.stderr)
        return 1
    print(f"removed {len(configs)} discovery configs of device {config.device_id} under {c.homeassistant.prefix}/ "
          f"and its {len(others)} retained status, state and snapshot topics under {box.prefix}/{box.device}/")
    return 0
