# Runs in the vm-client guest, cwd = the NFS mount (issue 6, must-show 2):
#  1. fio sequential 1 GiB write + read back with crc32c verification;
#  2. fio 4 KiB random read/write over 64 MiB with crc32c verification;
#  3. untar of /usr/share/doc (a few thousand files) and `diff -r --no-dereference`
#     against the original (symbolic links compared as links, so relative links that
#     dangle outside the tree still compare).
# Prints one WORKLOAD-OK/WORKLOAD-FAILED line per step and exits non-zero on any failure.
set -u
cd "${VMC_MNT:-/mnt}"
status=0
step() { # name, command...
    name=$1; shift
    if "$@" >"/tmp/$name.log" 2>&1; then
        echo "WORKLOAD-OK $name"
    else
        echo "WORKLOAD-FAILED $name"; tail -n 30 "/tmp/$name.log"; status=1
    fi
    grep -E "WRITE:|READ:|verify:|err=" "/tmp/$name.log" || true
}
step fio-seq fio --name=seq --filename=seqfile --rw=write --bs=1M --size=1G --end_fsync=1 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --ioengine=psync
step fio-rand fio --name=rand --filename=randfile --rw=randrw --bs=4k --size=64M \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --ioengine=psync
untar_diff() {
    mkdir -p tree && tar -C /usr/share -cf - doc | tar -C tree -xf - &&
        diff -r --no-dereference /usr/share/doc tree/doc &&
        echo "$(find tree -type f | wc -l) files, $(find tree -type l | wc -l) symlinks, $(find tree -type d | wc -l) directories match"
}
step untar-diff untar_diff
tail -n 1 /tmp/untar-diff.log
exit $status
