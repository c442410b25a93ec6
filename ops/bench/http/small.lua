-- GETs of small files chosen at random: PREFIX followed by a COUNT-wide, 4-digit index.
-- Usage: wrk ... -s small.lua URL -- PREFIX COUNT
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local prefix, count

function init(args)
   prefix = args[1]
   count = tonumber(args[2])
   math.randomseed(2000 + thread_id)
end

function request()
   return wrk.format("GET", prefix .. string.format("%04d", math.random(0, count - 1)))
end
