//! The HTTP API's handlers, one file per resource. Each handler reads its request into a
//! typed request of `muster-protocol`, calls one `Broker` operation with the caller, and
//! writes the reply: nothing else.

pub(crate) mod chat;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod presence;
pub(crate) mod system;
pub(crate) mod tasks;
pub(crate) mod workspaces;
