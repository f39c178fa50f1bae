-- wrk script: like post.lua, plus a pause before each request so the whole run offers
-- roughly RATE requests/s over all connections (closed loop; the achieved rate is printed).
dofile("bench/post.lua")
local connections = tonumber(os.getenv("CONNECTIONS"))
local rate = tonumber(os.getenv("RATE"))
local pause = math.max(0, math.floor(connections * 1000 / rate))
delay = function()
  return pause
end
