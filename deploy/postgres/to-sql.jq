# One MQTT message (mosquitto_sub -F '%J', one per line) -> one INSERT for schema.sql.
# Topic and payload become SQL string literals with every ' doubled, so no payload can be read as SQL
# (standard_conforming_strings is on in every supported PostgreSQL: a backslash is an ordinary character).
# A line that is not JSON, or a payload that is not a JSON object, is skipped.
def literal: "'" + gsub("'"; "''") + "'";
fromjson?
| select(.payload | type == "object")
| "INSERT INTO streamcap_events(topic, doc) VALUES (\(.topic | literal), \(.payload | tojson | literal));"
