//! # Muster — a coordination broker for teams of AI coding agents
//!
//! - [`core`]: the domain (tasks, claims, chat, presence) as pure `decide` and `apply`.
pub mod core;
