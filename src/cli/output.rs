//! How the CLI shows things to humans: aligned tables, relative times, one line per event.

use chrono::Utc;
use muster_protocol::{ChatMessage, Event, EventKind, Presence, Reservation, Task, Timestamp, WorkspaceInfo};

use muster_protocol::last_seen_text;

/// Aligns rows under a header, two spaces between columns; the last column is not padded.
/// Prints a line of a command's output. A closed pipe (`muster who | head -1`) ends the
/// command at once, quietly, with 141: what a Unix tool killed by SIGPIPE exits with. (Rust
/// ignores SIGPIPE, so the write fails instead, and `println!` would panic.)
pub(crate) fn line(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("muster: cannot write the output: {e}");
        std::process::exit(1);
    }
}

pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `3m ago` for a time in the past.
pub(crate) fn ago(at: Timestamp) -> String {
    last_seen_text(at, Utc::now())
}

/// The board as a table.
pub(crate) fn tasks(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "no tasks".to_owned();
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let holder = match (&t.claim, &t.assignee) {
                (Some(c), _) => format!("{} ({})", c.agent, ago(c.at)),
                (None, Some(a)) => a.clone(),
                (None, None) => "-".to_owned(),
            };
            let blocked = if t.blocked_by.is_empty() {
                String::new()
            } else {
                format!(" [after {}]", t.blocked_by.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            };
            vec![
                t.id.to_string(),
                t.priority.to_string(),
                t.status.to_string(),
                holder,
                format!("{}{blocked}", t.title),
            ]
        })
        .collect();
    table(&["ID", "PRI", "STATUS", "ASSIGNEE", "TITLE"], &rows)
}

/// Finished tasks `muster task list` shows below the open work.
const FINISHED_SHOWN: usize = 10;

/// The board's order for a reader: open work first (by id), then finished tasks, the
/// ones that changed last first.
pub(crate) fn open_first(tasks: &mut [Task]) {
    tasks.sort_by(|a, b| {
        let key = |t: &Task| t.status.is_finished();
        key(a).cmp(&key(b)).then_with(|| {
            if a.status.is_finished() { b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)) } else { a.id.cmp(&b.id) }
        })
    });
}

/// The board as `muster task list` shows it: open work, then the last few finished tasks
/// (in [`open_first`] order), and how to see the rest.
pub(crate) fn board(tasks: &[Task]) -> String {
    let open = tasks.iter().take_while(|t| !t.status.is_finished()).count();
    let shown = tasks.len().min(open + FINISHED_SHOWN);
    let mut out = self::tasks(&tasks[..shown]);
    if tasks.len() > shown {
        out.push_str(&format!(
            "\n… {} more finished lately; --status done,cancelled or --all for every finished task",
            tasks.len() - shown
        ));
    }
    out
}

/// One task, in full.
pub(crate) fn task(t: &Task) -> String {
    let mut out = format!("{}  {}\n", t.id, t.title);
    out.push_str(&format!("status:    {}\npriority:  {}\n", t.status, t.priority));
    out.push_str(&format!("assignee:  {}\n", t.assignee.as_deref().unwrap_or("-")));
    if let Some(c) = &t.claim {
        out.push_str(&format!("claim:     {} since {} (token {})\n", c.agent, ago(c.at), c.token));
    }
    if !t.blocked_by.is_empty() {
        let ids: Vec<String> = t.blocked_by.iter().map(ToString::to_string).collect();
        out.push_str(&format!("after:     {}\n", ids.join(", ")));
    }
    if !t.tags.is_empty() {
        out.push_str(&format!("tags:      {}\n", t.tags.join(", ")));
    }
    out.push_str(&format!("created:   {} by {}\n", ago(t.created_at), t.created_by.as_deref().unwrap_or("-")));
    out.push_str(&format!("updated:   {}", ago(t.updated_at)));
    if !t.description.is_empty() {
        out.push_str(&format!("\n\n{}", t.description));
    }
    out
}

/// `task show`: a task, then its comments, oldest first (in JSON, the task's fields and
/// `comments`).
#[derive(serde::Serialize)]
pub(crate) struct Shown<'a> {
    #[serde(flatten)]
    pub(crate) task: &'a Task,
    pub(crate) comments: &'a [ChatMessage],
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&task(self.task))?;
        if !self.comments.is_empty() {
            write!(f, "\n\ncomments ({}):", self.comments.len())?;
            for c in self.comments {
                write!(f, "\n  {} {} {}: {}", c.id, ago(c.at), c.from, c.content)?;
            }
        }
        Ok(())
    }
}

/// The team as a table.
pub(crate) fn who(agents: &[Presence]) -> String {
    if agents.is_empty() {
        return "nobody has been seen yet".to_owned();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.status.to_string(),
                a.last_seen.clone(),
                a.task.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                if a.stuck { "STUCK".to_owned() } else { String::new() },
                a.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "LAST SEEN", "TASK", "STUCK", "NOTE"], &rows)
}

/// The workspaces as a table.
pub(crate) fn workspaces(workspaces: &[WorkspaceInfo]) -> String {
    let rows: Vec<Vec<String>> = workspaces
        .iter()
        .map(|w| {
            let state = if w.archived { "archived" } else { "open" };
            vec![w.name.clone(), state.to_owned(), w.head.to_string()]
        })
        .collect();
    table(&["NAME", "STATE", "EVENTS"], &rows)
}

/// A chat message on one line.
pub(crate) fn message(m: &ChatMessage) -> String {
    let place = match &m.to {
        Some(to) => format!("{} → {to}", m.from),
        None => format!("#{} {}", m.channel, m.from),
    };
    format!("{} {} {place}: {}", m.id, ago(m.at), m.content)
}

/// `repo: a, b (exclusive, T-3)` for reservations of one event (which share a repo, mode and
/// task).
fn patterns(reservations: &[Reservation]) -> String {
    let Some(first) = reservations.first() else { return "nothing".to_owned() };
    let list: Vec<&str> = reservations.iter().map(|r| r.pattern.as_str()).collect();
    let mode = if first.exclusive { "exclusive" } else { "shared" };
    let task = first.task.map(|t| format!(", {t}")).unwrap_or_default();
    format!("{}: {} ({mode}{task})", first.repo, list.join(", "))
}

/// An event on one line, for `watch` and `wait`.
pub(crate) fn event(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::TaskCreated { task } => {
            format!(
                "{} created by {}: {} [{}]",
                task.id,
                task.created_by.as_deref().unwrap_or("-"),
                task.title,
                task.priority
            )
        }
        EventKind::TaskUpdated { task, by, changes } => {
            format!(
                "{} {} by {} ({}): {}",
                task.id,
                task.status,
                by.as_deref().unwrap_or("-"),
                changes.join(", "),
                task.title
            )
        }
        EventKind::TaskClaimed { task, agent } => {
            format!("{} claimed by {agent} (token {}): {}", task.id, task.last_token, task.title)
        }
        EventKind::TaskReleased { task, agent, reason, by } => {
            let reason =
                serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            format!(
                "{} released from {agent} by {} ({reason}): {}",
                task.id,
                by.as_deref().unwrap_or("the broker"),
                task.title
            )
        }
        EventKind::TaskCompleted { task, by } => {
            format!("{} done by {}: {}", task.id, by.as_deref().unwrap_or("-"), task.title)
        }
        EventKind::TaskReady { task } => format!("{} is ready (its blockers are done): {}", task.id, task.title),
        EventKind::ChatMessage { message } => {
            let place = match &message.to {
                Some(to) => format!("{} → {to}", message.from),
                None => format!("#{} {}", message.channel, message.from),
            };
            format!("{place}: {}", message.content)
        }
        EventKind::TaskCommented { message } => {
            let task = message.task.map(|t| t.to_string()).unwrap_or_default();
            format!("{task} comment by {}: {}", message.from, message.content)
        }
        EventKind::PresenceChanged { agent, .. } => {
            let shown = agent.shown.as_ref().map(|s| s.as_str().to_owned());
            let mut state = if agent.connections > 0 {
                format!("connected ({} session{})", agent.connections, if agent.connections == 1 { "" } else { "s" })
            } else if agent.left_at.is_some() {
                "left".to_owned()
            } else {
                shown.or_else(|| agent.status.clone()).unwrap_or_else(|| "active".to_owned())
            };
            if agent.stuck {
                state.push_str(", stuck");
            }
            format!("{} {state}{}", agent.name, agent.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default())
        }
        EventKind::InboxAcked { agent, seq } => format!("{agent} read their inbox up to {seq}"),
        EventKind::FilesReserved { agent, reservations } => {
            format!("{agent} reserved {}", patterns(reservations))
        }
        EventKind::FilesReleased { agent, by, reason, reservations } => {
            let reason =
                serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let by = by.as_deref().unwrap_or("the broker");
            format!("{agent}'s {} released by {by} ({reason})", patterns(reservations))
        }
    };
    format!("{} #{:<6} {:<16} {what}", e.at.format("%H:%M:%S"), e.seq, e.kind.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let t = table(&["ID", "TITLE"], &[vec!["T-1".into(), "short".into()], vec!["T-100".into(), "x".into()]]);
        assert_eq!(t, "ID     TITLE\nT-1    short\nT-100  x");
    }
}
