-- wrk: the article's chat post (scripts/wrk-compare.sh).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"from": "kai", "content": "@link PR #522 is green, merge it", "channel": "general"}'
