//! Every task ever created, as the views keep it: what the model let go of (tasks
//! finished long ago) is read back from here, by id or walked in id order for a page.

use std::sync::Arc;

use muster_protocol::{Task, TaskId};

use super::db::{Db, StoreError, from_json};

/// The `tasks` view, read back.
pub(crate) struct Archive {
    db: Arc<Db>,
}

impl Archive {
    /// The archive of `db`.
    pub(crate) fn new(db: Arc<Db>) -> Archive {
        Archive { db }
    }

    /// The stored task with this id.
    pub(crate) fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        let h = self.db.handles()?;
        h.tasks.get(id.0.to_be_bytes())?.map(|v| from_json("tasks", &v)).transpose()
    }

    /// Visits the stored tasks' ids after `after` (before it when `desc`), in id order
    /// (descending when `desc`), while `visit` returns `true`. `visit` gets the id and a
    /// reader of the stored task, so that it parses only the tasks it needs.
    pub(crate) fn walk(
        &self,
        after: Option<TaskId>,
        desc: bool,
        mut visit: impl FnMut(TaskId, &dyn Fn() -> Result<Task, StoreError>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let h = self.db.handles()?;
        let range = match (after, desc) {
            (None, _) => h.tasks.iter(),
            (Some(after), false) => h.tasks.range(after.0.saturating_add(1).to_be_bytes()..),
            (Some(after), true) => h.tasks.range(..after.0.to_be_bytes()),
        };
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if desc { Box::new(range.rev()) } else { Box::new(range) };
        for entry in entries {
            let (key, value) = entry?;
            let Some(id) = key.as_ref().try_into().ok().map(u64::from_be_bytes) else {
                return Err(StoreError::Corrupt { tree: "tasks", error: format!("a key of {} bytes", key.len()) });
            };
            if !visit(TaskId(id), &|| from_json("tasks", &value))? {
                break;
            }
        }
        Ok(())
    }
}
