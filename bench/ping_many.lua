-- GET /api/ping as many distinct clients: a random X-Forwarded-For per request (the api must
-- trust 127.0.0.1: APP__API__RATE_LIMIT__TRUSTED_PROXIES=127.0.0.1). ~260k distinct addresses, so
-- concurrent requests rarely share a client and each costs its own Redis call.
math.randomseed(os.time())

request = function()
  local ip = string.format("10.%d.%d.%d", math.random(0, 3), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", nil, { ["X-Forwarded-For"] = ip })
end
