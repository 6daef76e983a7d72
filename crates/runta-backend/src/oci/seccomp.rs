//! The default seccomp profile: everything a normal program needs is allowed;
//! calls that reach into the kernel or the host beyond a container's business
//! fail with EPERM. (A deny list in the spirit of Docker's default profile;
//! capabilities and namespaces are the first fence, this is the second.)

use serde_json::{json, Value};

/// Syscalls no runtime needs: kernel modules and kexec, mounting and namespace
/// games, clock and swap control, keyrings, BPF and perf, cross-process memory
/// access, io_uring (a large, often-patched attack surface).
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
];

const CLONE_NEWUSER: u64 = 0x1000_0000;
const AF_VSOCK: u64 = 40;

pub fn default_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            // New user namespaces hand out capabilities inside them: refuse.
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
            // clone3 passes flags in memory seccomp cannot see: make libc fall back to clone.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // POSIX message queues are charged to the creating uid's one
            // RLIMIT_MSGQUEUE budget, and without a user namespace every
            // runtime is the host's uid 0: one runtime's queues would leave
            // none for other tenants or the host. Not offered (ENOSYS).
            {"names": ["mq_open"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // IP_FREEBIND lets a program bind any address, a neighbour's
            // included, and send from it: egress policies and audits tell
            // runtimes apart by source address, so no runtime may.
            {"names": ["setsockopt"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 15, "op": "SCMP_CMP_EQ"}]},
            {"names": ["setsockopt"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 41, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 78, "op": "SCMP_CMP_EQ"}]},
            // AF_VSOCK reaches the hypervisor or host of a VM host, past every
            // network namespace: no such family (EAFNOSUPPORT).
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
             "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}]}
        ]
    })
}
