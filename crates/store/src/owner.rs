//! Who holds a lease: `fieldsync pid N on HOST`, and whether such a holder on this machine is
//! gone, so that a store without a lock that dies with the process (PostgreSQL) can take a
//! dead local holder's lease at once, as the SQLite store's lock file allows, and waits for
//! the lease to expire only for a holder on another machine (or one still alive, stalled).

use std::path::Path;

/// The owner of the leases this process takes: its pid and the machine's name.
pub fn lease_owner() -> String {
    format!("fieldsync pid {} on {}", std::process::id(), host())
}

/// Whether `owner` (as `lease_owner` wrote it) is a process of this machine that no longer
/// exists. `false` whenever that cannot be told: another machine, another form, a system
/// without `/proc`. A pid taken again by another process reads as alive, which only makes
/// the lease wait for its expiry.
pub fn owner_is_gone(owner: &str) -> bool {
    let Some((pid, host_name)) =
        owner.strip_prefix("fieldsync pid ").and_then(|rest| rest.split_once(" on "))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    host_name == host() && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// This machine's name (`localhost` when it has none to tell).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_gone_only_when_it_is_a_process_of_this_machine_that_exited() {
        assert!(!owner_is_gone(&lease_owner()), "this process is alive");
        let mut child = std::process::Command::new("true").spawn().expect("a child process");
        let pid = child.id();
        child.wait().expect("it exits");
        if Path::new("/proc/self").exists() {
            assert!(
                owner_is_gone(&format!("fieldsync pid {pid} on {}", host())),
                "an exited process is gone"
            );
        }
        assert!(!owner_is_gone(&format!("fieldsync pid {pid} on another-machine.example")));
        for other in ["", "first", "fieldsync pid x on here", "fieldsync pid 12"] {
            assert!(!owner_is_gone(other), "{other}");
        }
    }
}
