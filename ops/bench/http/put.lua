-- PUTs of SIZE-byte bodies, each under a fresh key and with distinct content (a
-- content-addressed store must not get away with deduplicating them).
-- Key: PREFIX<thread>-<counter>-<random>; body: that key's tag followed by random bytes.
-- Usage: wrk ... -s put.lua URL -- PREFIX SIZE [TOKEN]
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local prefix, size, headers, filler, nonce
local counter = 0

function init(args)
   prefix = args[1]
   size = tonumber(args[2])
   headers = { ["Content-Type"] = "application/octet-stream" }
   if args[3] and args[3] ~= "" then
      headers["Authorization"] = "Bearer " .. args[3]
   end
   math.randomseed(os.time() * 100 + thread_id)
   nonce = string.format("%08x", math.random(0, 0x7fffffff))
   local bytes = {}
   for i = 1, size do
      bytes[i] = string.char(math.random(0, 255))
   end
   filler = table.concat(bytes)
end

function request()
   counter = counter + 1
   local tag = string.format("%d-%d-%s", thread_id, counter, nonce)
   local body = tag .. string.sub(filler, #tag + 1)
   return wrk.format("PUT", prefix .. tag, headers, body)
end
