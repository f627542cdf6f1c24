-- Many keys in turn: each request carries the next key of the file named by the first script
-- argument (one key per line, scripts/load.sh passes it), so a run spreads over every key.
-- The summary line is wrk-report.lua's, loaded from beside this file.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk-report.lua")

local keys, next_key = {}, 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then keys[#keys + 1] = line end
  end
  assert(#keys > 0, "no keys in " .. args[1])
end

function request()
  next_key = next_key % #keys + 1
  return wrk.format(nil, nil, { ["x-api-key"] = keys[next_key] })
end
