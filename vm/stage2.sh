#!/bin/bash
# Stage 2: PID 1 in the VM, from the host's (overlaid) root: load modules, run the job's
# command as root, write its exit status for the host, power off. The files touched in the
# job directory (booted, started) time the boot for the host.
: > /run/vmjob/booted
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
. /run/vmjob/env
export DM_DISABLE_UDEV=1   # no udev: device-mapper users create their own nodes
# the initramfs loaded those it carries; modprobe the rest
for m in $VM_MODULES; do
  [ -d "/sys/module/${m//-/_}" ] || modprobe "$m" || echo "vm: modprobe $m failed" >&2
done
: > /run/vmjob/started
rc=0
bash /run/vmjob/cmd.sh < /dev/null || rc=$?
echo "$rc" > /run/vmjob/rc
sync
exec /bin/busybox poweroff -f
