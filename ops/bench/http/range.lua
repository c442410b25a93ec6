-- Random ranged GETs: every request asks for LENGTH bytes of PATH (SIZE bytes long) at a random
-- offset; half of the offsets are multiples of LENGTH, half are arbitrary bytes.
-- Usage: wrk ... -s range.lua URL -- PATH SIZE [LENGTH]
-- The generator is seeded per thread with a fixed seed, so every server gets the same ranges.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local path, size, length

function init(args)
   path = args[1]
   size = tonumber(args[2])
   length = tonumber(args[3] or 65536)
   math.randomseed(1000 + thread_id)
end

function request()
   local first
   if math.random() < 0.5 then
      first = math.random(0, math.floor(size / length) - 1) * length
   else
      first = math.random(0, size - length)
   end
   return wrk.format("GET", path, { ["Range"] = "bytes=" .. first .. "-" .. (first + length - 1) })
end
