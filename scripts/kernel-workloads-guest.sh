# Runs in the vm-client guest, cwd = the NFS mount: fio sequential and random with
# crc32c verification, then an untar of /usr/share/doc and diff -r against the original.
set -e
cd /mnt
fio --name=seq --filename=seqfile --rw=write --bs=1M --size=1G --direct=0 --end_fsync=1 --verify=crc32c --do_verify=1 --ioengine=psync 2>&1 | grep -E "WRITE:|READ:|verify|err=" || true
fio --name=rand --filename=randfile --rw=randrw --bs=4k --size=64M --ioengine=psync --verify=crc32c --do_verify=1 --runtime=60 --time_based=0 2>&1 | grep -E "WRITE:|READ:|verify|err=" || true
mkdir -p tree && tar -C /usr/share -cf - doc | tar -C tree -xf - && diff -r --no-dereference /usr/share/doc tree/doc && echo "UNTAR-DIFF-OK $(find tree -type f | wc -l) files"
