-- The pop-and-record script of eventbus/fastpath/broker.py (FailFastChannel): pop up to ARGV[2]
-- messages of a queue and record each as unacknowledged, as kombu's QoS.append would,
-- in one round trip. Its KEYS and ARGV are described beside its use there.
local now = ARGV[1]
local want = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
end
local taken = {}
for k = 3, #KEYS do
  while #taken < want do
    local item = redis.call('RPOP', KEYS[k])
    if not item then break end
    local ok, message = pcall(cjson.decode, item)
    local properties = ok and type(message) == 'table' and message['properties']
    local info = type(properties) == 'table' and properties['delivery_info']
    local tag = type(properties) == 'table' and properties['delivery_tag']
    if type(tag) ~= 'string' or type(info) ~= 'table'
        or type(info['exchange']) ~= 'string' or type(info['routing_key']) ~= 'string' then
      redis.call('RPUSH', KEYS[k], item)
      return taken
    end
    redis.call('ZADD', KEYS[1], now, tag)
    redis.call('HSET', KEYS[2], tag,
      '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
    taken[#taken + 1] = item
  end
end
return taken
