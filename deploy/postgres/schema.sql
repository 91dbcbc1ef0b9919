-- A central caption history for a site: every box's MQTT captions and alarms in one PostgreSQL table,
-- searchable with PostgreSQL's full-text search. Fed by mqtt-to-postgres.sh (mosquitto_sub | jq | psql).
--   psql "$PGURL" -f deploy/postgres/schema.sql          (idempotent)
CREATE TABLE IF NOT EXISTS streamcap_events (
    id       bigserial PRIMARY KEY,
    topic    text NOT NULL,                 -- <prefix>/<device>/<camera>/caption|alarm
    doc      jsonb NOT NULL,                -- the message as streamcap published it
    device   text NOT NULL DEFAULT '',      -- filled from the topic by the trigger below
    camera   text NOT NULL DEFAULT '',
    kind     text NOT NULL DEFAULT '',      -- caption | alarm
    at       timestamptz,                   -- the message's "time"
    caption  text,
    received timestamptz NOT NULL DEFAULT now(),
    words    tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(doc->>'caption', ''))) STORED
);
CREATE INDEX IF NOT EXISTS streamcap_events_words ON streamcap_events USING gin (words);
CREATE INDEX IF NOT EXISTS streamcap_events_camera ON streamcap_events (device, camera, at);
CREATE INDEX IF NOT EXISTS streamcap_events_at ON streamcap_events (at);

-- The prefix may have several levels, so device, camera and kind are counted from the topic's end.
CREATE OR REPLACE FUNCTION streamcap_events_fill() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    levels text[] := string_to_array(NEW.topic, '/');
    n int := array_length(levels, 1);
BEGIN
    NEW.device := coalesce(levels[n - 2], '');
    NEW.camera := coalesce(levels[n - 1], '');
    NEW.kind := coalesce(levels[n], '');
    NEW.at := (NEW.doc->>'time')::timestamptz;
    NEW.caption := NEW.doc->>'caption';
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS streamcap_events_fill ON streamcap_events;
CREATE TRIGGER streamcap_events_fill BEFORE INSERT ON streamcap_events
    FOR EACH ROW EXECUTE FUNCTION streamcap_events_fill();

-- Search, e.g.:  SELECT * FROM streamcap_search('white van', interval '12 hours');
CREATE OR REPLACE FUNCTION streamcap_search(query text, back interval DEFAULT interval '1 day', max_rows int DEFAULT 50)
RETURNS TABLE (device text, camera text, kind text, at timestamptz, caption text) LANGUAGE sql STABLE AS $$
    SELECT device, camera, kind, at, caption FROM streamcap_events
    WHERE words @@ websearch_to_tsquery('english', query) AND at > now() - back
    ORDER BY at DESC LIMIT max_rows
$$;
