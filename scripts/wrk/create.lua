-- wrk: the article's task creation (scripts/wrk-compare.sh).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "Fix auth redirect", "assignee": "link", "priority": "P1"}'
