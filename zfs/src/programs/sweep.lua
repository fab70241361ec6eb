-- Destroys the snapshots a crash left on this driver's layers, in one transaction group
-- (run by lzc_channel_program from Zfs::sweep_strays). Arguments: `fsname`, the driver's
-- dataset; `property` and `owner`, the user property marking this driver's layers and its
-- value; `children`, the name of the snapshot children are cloned from; `tag1` and `tag2`,
-- the per-child names an earlier version gave the origin of the layer being destroyed.
-- Only snapshots without clones go. Returns "" when done, or "<errno> <name>".
args = ...
local doomed = {}
for ds in zfs.list.children(args["fsname"]) do
  if zfs.get_prop(ds, args["property"]) == args["owner"] then
    for snap in zfs.list.snapshots(ds) do
      local tag = string.sub(snap, #ds + 2)
      if tag == args["children"] or tag == args["tag1"] or tag == args["tag2"] then
        local cloned = false
        for _ in zfs.list.clones(snap) do
          cloned = true
        end
        if not cloned then
          doomed[#doomed + 1] = snap
        end
      end
    end
  end
end
for _, snap in ipairs(doomed) do
  local err = zfs.sync.destroy(snap)
  if err ~= 0 then
    return tostring(err) .. " " .. snap
  end
end
return ""
