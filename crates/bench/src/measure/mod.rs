//! The measurements, one module each: each repeats `report.runs` times,
//! bounded in count and time, and records FastChat next to its raw baseline
//! measured in the same run.

mod catchup;
mod common;
mod fanout;
mod history;
mod latency;
mod memory;
mod paced;
mod rooms;
mod send;
mod slow;
mod unread;
mod web;

pub use catchup::catchup;
pub use fanout::fanout;
pub use history::history;
pub use latency::latency;
pub use memory::memory;
pub use rooms::rooms;
pub use send::send;
pub use slow::slow;
pub use unread::unread;
pub use web::web;
