#!/usr/bin/env bash
# The rest connector's creates against a real Django REST Framework API (the test club site of
# crates/connector/testkit/django, Debian's python3-django and python3-djangorestframework), in
# release builds: `fieldsync run` creating N players from a club's SQLite table, against
# `fieldsync-plain-creates` sending the same N POSTs with the same concurrency (4). Each is run
# twice, alternating, on an emptied site.
#
#   bench/rest.sh [N]        (N = 1200 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1200}
python=/usr/bin/python3

cargo build --release -p fieldsync-cli -p fieldsync-bench --bins
root=$PWD
work=$(mktemp -d)
server=
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cp -r crates/connector/testkit/django "$work/site"
export CLUBSITE_ADMIN_USER=bench
CLUBSITE_ADMIN_PASSWORD=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
CLUBSITE_ADMIN_TOKEN=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
export CLUBSITE_ADMIN_PASSWORD CLUBSITE_ADMIN_TOKEN
(cd "$work/site" && $python manage.py migrate -v0 && $python manage.py seed --players 0)
port=$($python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work/site" && exec $python manage.py runserver "127.0.0.1:$port" --noreload --insecure >"$work/server.log" 2>&1) &
server=$!
deadline=$((SECONDS + 60))
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "the site did not start" >&2; tail "$work/server.log" >&2; exit 1; fi
    sleep 0.1
done
export DRF_TOKEN=$CLUBSITE_ADMIN_TOKEN
export DRF_AUTH="Token $CLUBSITE_ADMIN_TOKEN"

# The club's N members, and a link that creates them on the site.
$python - "$work/club.db" "$count" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE members (federation_id TEXT PRIMARY KEY, first_name TEXT, last_name TEXT, email TEXT, mobile TEXT, updated_at TEXT)")
db.executemany("INSERT INTO members VALUES (?, 'Jan', ?, ?, ?, '2026-01-01 10:00:00')",
    [(f"B{n:06d}", f"Bakker {n}", f"jan{n}@example.org", f"+3161{n:07d}") for n in range(1, int(sys.argv[2]) + 1)])
db.commit()
PY
cat >"$work/fieldsync.toml" <<TOML
state = "sqlite://state.db"

[connectors.club]
kind = "sqlite"
path = "club.db"
table = "members"
key = "federation_id"
modified = "updated_at"

[connectors.backend]
kind = "rest"
preset = "drf"
base_url = "http://127.0.0.1:$port/api/players/"
auth = { header = { name = "Authorization", value = "Token \${DRF_TOKEN}" } }

[links.players]
left = "club"
right = "backend"
key = { left = "federation_id", right = "/federation_id" }
creates = "left_to_right"

[[links.players.fields]]
name = "first_name"
left = "first_name"
right = "/first_name"

[[links.players.fields]]
name = "last_name"
left = "last_name"
right = "/last_name"

[[links.players.fields]]
name = "email"
type = "email"
left = "email"
right = "/email"

[[links.players.fields]]
name = "mobile"
type = "phone"
region = "NL"
left = "mobile"
right = "/mobile"
TOML

empty_site() {
    (cd "$work/site" && $python manage.py shell -c "from club.models import Player; Player.objects.all().delete()")
    rm -f "$work"/state.db*
}
changing() {
    if [ -f "$work/site/requests.log" ]; then awk '/^POST /{n++} END{print n+0}' "$work/site/requests.log"; else echo 0; fi
}

for round in 1 2; do
    empty_site
    before=$(changing)
    began=$(date +%s.%N)
    (cd "$work" && "$root/target/release/fieldsync" run >/dev/null)
    ended=$(date +%s.%N)
    printf 'round %s: fieldsync run: %s creates: %.2f s (%s POSTs)\n' "$round" "$count" "$(echo "$ended - $began" | bc)" \
        "$(($(changing) - before))"

    empty_site
    "$root/target/release/fieldsync-plain-creates" --url "http://127.0.0.1:$port/api/players/" --count "$count" \
        --concurrency 4 --header-env Authorization=DRF_AUTH \
        --body '{"federation_id": "B{n}", "first_name": "Jan", "last_name": "Bakker {n}", "email": "jan{n}@example.org", "mobile": "+3161{n}"}' |
        sed "s/^/round $round: plain client: /"
done
