//! Handing freed memory back to the operating system while the server is idle.
//!
//! The binary's allocator (mimalloc) returns memory freed in bulk to the operating system only
//! after a delay (one second), and only when some thread later frees a whole allocator page:
//! that free is where it checks for delayed returns that are due. A server that has just
//! rebuilt its projections, or just finished a burst of work, and then sits idle would keep
//! everything that work freed resident until traffic comes back: for a large estate, tens of
//! MiB of start-up garbage (decision 0019).
//!
//! So a task frees one such page every second: one allocation larger than the allocator's
//! largest size class, never touched, handed straight back. Under traffic it changes nothing
//! (requests free pages all the time); idle, it bounds how long freed memory stays resident to
//! about two seconds. It needs no allocator-specific call, and with another allocator it is
//! one short-lived allocation a second.

use std::time::Duration;

/// Larger than mimalloc's largest size class (512 KiB), so the block gets a page of its own
/// and freeing it frees that page.
const BLOCK_BYTES: usize = 1024 * 1024;

/// How often. The allocator's delay is one second; a second between nudges returns what was
/// freed within two.
const EVERY: Duration = Duration::from_secs(1);

/// Frees one page-sized block, which lets the allocator return memory whose delay has passed.
pub fn nudge() {
    let block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES);
    // Keeps the compiler from eliding the allocation and its free.
    drop(std::hint::black_box(block));
}

/// Nudges the allocator every [`EVERY`] until `stop` turns true.
pub fn spawn(mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => nudge(),
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
}
