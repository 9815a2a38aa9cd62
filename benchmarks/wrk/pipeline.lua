-- 16 GET requests written back to back on each connection (HTTP/1.1 pipelining).
-- wrk counts every response, so req/s is responses per second.
local depth = 16

init = function(args)
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format(nil, wrk.path)
  end
  pipelined = table.concat(requests)
end

request = function()
  return pipelined
end
