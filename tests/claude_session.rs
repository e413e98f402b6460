//! Two Claude Code agents in two worktrees of one repository, protected by nothing but
//! `muster init`: no agent reserves anything by hand. Each worktree is set up with
//! `muster init` (one of them with husky's hooks in place), then each agent's tool calls are
//! replayed the way Claude Code makes them: the hook commands `init` wrote into
//! `.claude/settings.local.json` are run through `sh -c`, with that file's `env`, the
//! session's `cwd`, and the hook input Claude Code documents on stdin (`session_id`,
//! `transcript_path`, `cwd`, `hook_event_name`, `tool_name`, `tool_input`, `tool_use_id`);
//! exit 2 refuses a `PreToolUse` call and is what the model is told after a `PostToolUse`.
//! Between the two hooks the tool's effect happens for real (the file written, the shell
//! command run). `git`, `muster` and `sh` run as processes; the broker is real.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Server, binary};
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args, &[]);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_output(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args).env("GIT_AUTHOR_NAME", "t").env("GIT_AUTHOR_EMAIL", "t@example.com");
    cmd.env("GIT_COMMITTER_NAME", "t").env("GIT_COMMITTER_EMAIL", "t@example.com");
    cmd.env_remove("MUSTER_AGENT").env_remove("MUSTER_REPO").envs(env.iter().copied());
    cmd.output().unwrap()
}

fn muster(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .current_dir(dir)
        .args(args)
        .env("MUSTER_URL", url)
        .env_remove("MUSTER_AGENT")
        .env_remove("MUSTER_REPO")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// husky 9's layout, as `husky` (the npm package's `prepare` script) writes it: the user's
/// hook in `.husky/pre-commit` (tracked), git's stubs in `.husky/_` (ignored), and
/// `core.hooksPath=.husky/_`.
fn husky(root: &Path, log: &Path) {
    executable(&root.join(".husky/pre-commit"), &format!("echo husky-pre-commit >> '{}'\n", log.display()));
    let h = "#!/usr/bin/env sh\n[ \"$HUSKY\" = \"2\" ] && set -x\nn=$(basename \"$0\")\n\
             s=$(dirname \"$(dirname \"$0\")\")/$n\n[ ! -f \"$s\" ] && exit 0\n[ \"${HUSKY-}\" = \"0\" ] && exit 0\n\
             export PATH=\"node_modules/.bin:$PATH\"\nsh -e \"$s\" \"$@\"\nc=$?\n\
             [ $c != 0 ] && echo \"husky - $n script failed (code $c)\"\nexit $c\n";
    executable(&root.join(".husky/_/h"), h);
    for hook in ["pre-commit", "commit-msg", "pre-push", "prepare-commit-msg", "post-checkout"] {
        executable(&root.join(".husky/_").join(hook), "#!/usr/bin/env sh\n. \"$(dirname \"$0\")/h\"\n");
    }
    std::fs::write(root.join(".husky/_/.gitignore"), "*\n").unwrap();
    git(root, &["config", "core.hooksPath", ".husky/_"]);
}

/// One Claude Code session: its worktree, its settings, its calls.
struct Session {
    cwd: PathBuf,
    settings: Value,
    id: String,
    calls: usize,
}

/// What a tool call came to.
#[derive(Debug)]
struct Call {
    /// The `PreToolUse` hooks' exit code (2: refused) and what they said.
    pre: (i32, String),
    /// The `PostToolUse` hooks' (none when the call was refused).
    post: Option<(i32, String)>,
}

impl Call {
    fn refused(&self) -> bool {
        self.pre.0 == 2
    }

    fn told(&self) -> Option<&str> {
        self.post.as_ref().filter(|(code, _)| *code == 2).map(|(_, said)| said.as_str())
    }
}

impl Session {
    fn new(root: &Path) -> Session {
        let text = std::fs::read_to_string(root.join(".claude/settings.local.json")).unwrap();
        let id = format!("{:08x}-0000-4000-8000-000000000001", root.to_string_lossy().len());
        Session { cwd: root.to_path_buf(), settings: serde_json::from_str(&text).unwrap(), id, calls: 0 }
    }

    fn agent(&self) -> String {
        self.settings["env"]["MUSTER_AGENT"].as_str().unwrap().to_owned()
    }

    /// Runs the hooks of `event` whose matcher takes `tool`, as Claude Code does; the
    /// first refusal, else the last outcome.
    fn hooks(&self, event: &str, tool: &str, input: &Value, call: &str) -> Option<(i32, String)> {
        let payload = json!({
            "session_id": self.id,
            "transcript_path": format!("/home/dev/.claude/projects/app/{}.jsonl", self.id),
            "cwd": self.cwd,
            "permission_mode": "acceptEdits",
            "hook_event_name": event,
            "tool_name": tool,
            "tool_input": input,
            "tool_use_id": call,
        });
        let mut outcome = None;
        for group in self.settings["hooks"][event].as_array().into_iter().flatten() {
            let matcher = group["matcher"].as_str().unwrap_or("*");
            if !(matcher == "*" || matcher.split('|').any(|m| m == tool)) {
                continue;
            }
            for hook in group["hooks"].as_array().unwrap() {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(hook["command"].as_str().unwrap()).current_dir(&self.cwd);
                cmd.env_remove("MUSTER_AGENT").env_remove("MUSTER_URL").env_remove("MUSTER_REPO");
                for (key, value) in self.settings["env"].as_object().unwrap() {
                    cmd.env(key, value.as_str().unwrap());
                }
                cmd.env("CLAUDE_PROJECT_DIR", &self.cwd);
                let mut child =
                    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                child.stdin.take().unwrap().write_all(payload.to_string().as_bytes()).unwrap();
                let out = child.wait_with_output().unwrap();
                let said = String::from_utf8_lossy(&out.stderr).into_owned();
                let code = out.status.code().unwrap_or(-1);
                if code == 2 {
                    return Some((code, said));
                }
                outcome = Some((code, said));
            }
        }
        outcome
    }

    /// A tool call: `PreToolUse`, then (unless refused) the tool's effect, then
    /// `PostToolUse`.
    fn call(&mut self, tool: &str, input: Value, effect: impl FnOnce(&Path)) -> Call {
        self.calls += 1;
        let id = format!("toolu_{}_{}", self.id.len(), self.calls);
        let pre = self.hooks("PreToolUse", tool, &input, &id).unwrap_or((0, String::new()));
        assert!(pre.0 == 0 || pre.0 == 2, "a hook exits 0 or 2: {pre:?}");
        if pre.0 == 2 {
            return Call { pre, post: None };
        }
        effect(&self.cwd);
        let post = self.hooks("PostToolUse", tool, &input, &id);
        Call { pre, post }
    }

    fn edit(&mut self, file: &str, text: &str) -> Call {
        let path = self.cwd.join(file);
        let input = json!({ "file_path": path, "old_string": "", "new_string": text });
        let text = text.to_owned();
        self.call("Edit", input, move |_| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        })
    }

    fn write(&mut self, file: &str, text: &str) -> Call {
        let path = self.cwd.join(file);
        let input = json!({ "file_path": path, "content": text });
        let text = text.to_owned();
        self.call("Write", input, move |_| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        })
    }

    fn notebook(&mut self, file: &str) -> Call {
        let path = self.cwd.join(file);
        let input = json!({ "notebook_path": path, "new_source": "print(1)", "edit_mode": "replace" });
        self.call("NotebookEdit", input, move |_| std::fs::write(&path, "{\"cells\": [1]}").unwrap())
    }

    fn bash(&mut self, command: &str) -> Call {
        let input = json!({ "command": command, "description": "run it" });
        let command = command.to_owned();
        self.call("Bash", input, move |cwd| {
            let status = Command::new("sh").arg("-c").arg(&command).current_dir(cwd).status().unwrap();
            assert!(status.success(), "{command}");
        })
    }
}

/// A repository (alice's worktree, with husky's hooks) and bob's worktree beside it.
fn repository(root: &Path, log: &Path) -> (PathBuf, PathBuf) {
    let alice = root.join("app");
    std::fs::create_dir_all(alice.join("src/deep")).unwrap();
    git(&alice, &["init", "-q", "-b", "main"]);
    git(&alice, &["remote", "add", "origin", "git@git.example.com:acme/app.git"]);
    for file in ["src/a.rs", "src/c.rs", "src/d.rs", "src/e.rs", "src/deep/f.rs", "notes.ipynb", "README.md"] {
        std::fs::write(alice.join(file), "fn a() {}\n").unwrap();
    }
    husky(&alice, log);
    git(&alice, &["add", "."]);
    git(&alice, &["commit", "-qm", "first"]);
    let bob = root.join("app-bob");
    git(&alice, &["worktree", "add", "-q", bob.to_str().unwrap()]);
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_claude_code_agents_set_up_by_muster_init_never_overwrite_each_other() {
    let s = Server::start().await;
    let url = s.url("");
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let log = root_path.join("husky.log");
    let (alice_dir, bob_dir) = repository(&root_path, &log);

    // One command per worktree; bob's gets the default name, printed, unlike alice's.
    let said = ok(&muster(&alice_dir, &url, &["init", "--agent", "alice"]));
    assert!(said.contains("as agent alice"), "{said}");
    let said = ok(&muster(&bob_dir, &url, &["init"]));
    let mut alice = Session::new(&alice_dir);
    let mut bob = Session::new(&bob_dir);
    let bob_name = bob.agent();
    assert!(bob_name.starts_with("app-bob-") && said.contains(&bob_name), "{said}");
    assert_eq!(alice.agent(), "alice");
    // Run twice, nothing changes.
    let before = std::fs::read_to_string(alice_dir.join(".claude/settings.local.json")).unwrap();
    ok(&muster(&alice_dir, &url, &["init", "--agent", "alice"]));
    assert_eq!(std::fs::read_to_string(alice_dir.join(".claude/settings.local.json")).unwrap(), before);
    // Nothing tracked changed, and what init wrote is not offered to `git add -A`.
    assert_eq!(git(&alice_dir, &["status", "--porcelain"]), "", "init leaves git status clean");
    ok(&muster(&alice_dir, &url, &["doctor"]));

    // alice claims a task and works on it: edits with absolute paths, a new file in a new
    // directory, a notebook, shell writes, a path from a subdirectory. No reserve step.
    let task = ok(&muster(&alice_dir, &url, &["task", "add", "auth rewrite", "--json", "--as", "alice"]));
    let task: Value = serde_json::from_str(task.lines().next().unwrap()).unwrap();
    let task = task["id"].as_str().unwrap().to_owned();
    ok(&muster(&alice_dir, &url, &["task", "claim", &task, "--as", "alice"]));
    for call in [
        alice.edit("src/a.rs", "fn alice() {}\n"),
        alice.write("src/newmod/mod.rs", "pub fn new() {}\n"),
        alice.notebook("notes.ipynb"),
        alice.bash("sed -i 's/a/alice/' src/c.rs"),
        alice.bash("echo '// alice' > src/d.rs"),
        alice.bash("git mv src/e.rs src/e2.rs"),
    ] {
        assert!(!call.refused() && call.told().is_none(), "alice's own work goes through: {call:?}");
    }
    alice.cwd = alice_dir.join("src/deep");
    assert!(!alice.edit("f.rs", "fn deep() {}\n").refused());
    alice.cwd = alice_dir.clone();
    let held = ok(&muster(&alice_dir, &url, &["files", "list", "--json"]));
    for path in ["/src/a.rs", "/src/newmod/mod.rs", "/notes.ipynb", "/src/c.rs", "/src/d.rs", "/src/e.rs", "/src/e2.rs"]
    {
        assert!(held.contains(&format!("\"pattern\":\"{path}\"")), "{path} is held for alice: {held}");
    }
    assert!(held.contains(&format!("\"task\":\"{task}\"")), "for her task: {held}");

    // bob touches each of those files, the way each was touched: every time he is stopped
    // within the same tool call, told who holds it, for which task, and how to ask.
    std::fs::create_dir_all(bob_dir.join("src/newmod")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("src/a.rs", bob_dir.join("lnk.rs")).unwrap();
    let attempts = [
        ("Edit, absolute path", bob.edit("src/a.rs", "fn bob() {}\n")),
        ("Write, new file in a new directory", bob.write("src/newmod/mod.rs", "// bob\n")),
        ("NotebookEdit", bob.notebook("notes.ipynb")),
        ("sed -i", bob.bash("sed -i 's/a/bob/' src/c.rs")),
        ("echo >", bob.bash("echo '// bob' > src/d.rs")),
        ("git mv", bob.bash("git mv src/e.rs src/e3.rs")),
        ("a symlink to the file", bob.edit("lnk.rs", "fn bob() {}\n")),
    ];
    for (how, call) in &attempts {
        assert!(call.refused(), "{how}: bob was not stopped: {call:?}");
        let said = &call.pre.1;
        assert!(said.contains("alice") && said.contains(&task) && said.contains("muster chat post"), "{how}: {said}");
    }
    assert_eq!(std::fs::read_to_string(bob_dir.join("src/a.rs")).unwrap(), "fn a() {}\n", "nothing written");
    bob.cwd = bob_dir.join("src/deep");
    let deep = bob.edit("f.rs", "fn bob() {}\n");
    assert!(deep.refused() && deep.pre.1.contains("src/deep/f.rs"), "from a subdirectory: {deep:?}");
    bob.cwd = bob_dir.clone();

    // A write the guard cannot read in advance is caught as the command ends: bob is told
    // at once which file, whose, and how to restore it; his change is left for him to undo.
    let sneaky = bob.bash("python3 -c \"open('src/a.rs', 'a').write('// bob was here\\n')\"");
    assert!(!sneaky.refused());
    let told = sneaky.told().unwrap_or_else(|| panic!("bob was not told: {sneaky:?}"));
    assert!(told.contains("src/a.rs") && told.contains("alice") && told.contains("git restore"), "{told}");
    assert!(std::fs::read_to_string(bob_dir.join("src/a.rs")).unwrap().contains("bob was here"), "never undone");
    git(&bob_dir, &["restore", "--source=HEAD", "--staged", "--worktree", "--", "src/a.rs"]);
    // What bob changed through the shell that nobody held is now his.
    let free = bob.bash("python3 -c \"open('src/bob.rs', 'w').write('// bob\\n')\"");
    assert!(!free.refused() && free.told().is_none(), "{free:?}");
    let his = ok(&muster(&bob_dir, &url, &["files", "who", "src/bob.rs"]));
    assert!(his.contains(&bob_name), "{his}");
    // ... and alice, in turn, cannot write it.
    let back = alice.edit("src/bob.rs", "// alice\n");
    assert!(back.refused() && back.pre.1.contains(&bob_name), "{back:?}");

    // alice's commit runs husky's hook as before, and goes through.
    git(&alice_dir, &["add", "-A"]);
    let commit = git_output(&alice_dir, &["commit", "-qm", "auth"], &[("MUSTER_URL", &url)]);
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));
    assert!(std::fs::read_to_string(&log).unwrap().contains("husky-pre-commit"), "husky's own hook still runs");

    // When alice completes her task, her files are free: bob's next edit goes through.
    ok(&muster(&alice_dir, &url, &["task", "done", &task, "--as", "alice"]));
    let after = bob.edit("src/a.rs", "fn bob() {}\n");
    assert!(!after.refused(), "{after:?}");
    let now = ok(&muster(&bob_dir, &url, &["files", "who", "src/a.rs"]));
    assert!(now.contains(&bob_name), "held for bob now: {now}");
}
