//! The pod sandbox's process for the CRI tests' pause image: waits for SIGINT or SIGTERM,
//! reaping any children meanwhile (it is PID 1 of its pod).

fn main() {
    // SAFETY: plain signal-mask manipulation and waiting; no Rust state is involved.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                continue;
            }
            libc::_exit(0);
        }
    }
}
