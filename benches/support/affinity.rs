//! CPU affinity for the benchmarks that place threads on CPUs (`ring`'s
//! pinned placements, `throttle`'s pinned vCPUs). Shared by `#[path]`.
//!
//! CPUs are named by their index in the process's affinity mask, not by
//! their number: in a container whose cpuset is, say, CPUs 2-3, index 0 is
//! CPU 2.

use std::io;
use std::mem::{size_of, zeroed};

/// The CPUs this process may run on, in increasing order (empty if the
/// mask cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is the empty set; sched_getaffinity writes
    // at most `size_of::<cpu_set_t>()` bytes into it; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Restricts the calling thread to `cpus` (CPU numbers, from
/// [`allowed_cpus`]).
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as above; sched_setaffinity reads a valid set of that size
    // (pid 0 = the calling thread).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
