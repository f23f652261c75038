-- POST /api/dm-jobqueue/register/batch: 1,000 jobs per request (~40 KB body, under the 64 KB limit).
local jobs = {}
for i = 1, 1000 do
  jobs[i] = '{"message":"bench","delay_seconds":3600,"max_retry":0}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"jobs":[' .. table.concat(jobs, ",") .. ']}'
