-- POST /api/dm-jobqueue/register: one job per request, far in the future (no worker runs them).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"message":"bench","delay_seconds":3600,"max_retry":0}'
