-- Removes a layer's dataset in one transaction group (run by lzc_channel_program from
-- Zfs::destroy). Arguments: `dataset`, the layer's; `scope`, the driver's dataset and "/";
-- `property` and `owner`, the user property marking this driver's layers and its value.
-- Returns "" when done, or "<errno> <name>" naming the step that failed; a failed step
-- leaves every later one undone.
--   0. A dataset of that name that another driver home owns (two roots on one dataset, the
--      same layer id) is not this layer: nothing is done (ENOTUNIQ, 76, which no ZFS step
--      here returns).
--   1. Its snapshots: at most the one its children were cloned from, left by a crash
--      between snapshot and clone. None may have a clone (the store removes only layers
--      without children): one that has is not ours to break, and nothing is done (EEXIST).
--   2. The dataset. EBUSY when it is still mounted somewhere; step 1 lost nothing.
--   3. Its origin, the parent's snapshot, when this driver made it and no other clone is
--      left on it: the parent's last child takes the snapshot with it.
args = ...
local ds = args["dataset"]
local scope = args["scope"]
if not zfs.exists(ds) then
  return "2 " .. ds
end
if zfs.get_prop(ds, args["property"]) ~= args["owner"] then
  return "76 " .. ds
end
local snaps = {}
for snap in zfs.list.snapshots(ds) do
  for _ in zfs.list.clones(snap) do
    return "17 " .. snap
  end
  snaps[#snaps + 1] = snap
end
local origin = zfs.get_prop(ds, "origin")
for _, snap in ipairs(snaps) do
  local err = zfs.sync.destroy(snap)
  if err ~= 0 then
    return tostring(err) .. " " .. snap
  end
end
local err = zfs.sync.destroy(ds)
if err ~= 0 then
  return tostring(err) .. " " .. ds
end
if origin ~= nil and string.sub(origin, 1, #scope) == scope then
  for _ in zfs.list.clones(origin) do
    return ""
  end
  err = zfs.sync.destroy(origin)
  if err ~= 0 then
    return tostring(err) .. " " .. origin
  end
end
return ""
