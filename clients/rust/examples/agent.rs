//! A minimal agent: takes the next open task, says so in chat, finishes it.
//!
//! ```text
//! cargo run -p muster-client --example agent -- http://127.0.0.1:4445 link
//! ```

use muster_client::protocol::{PostMessage, TaskAction};
use muster_client::{Client, Options};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:4445".into());
    let agent = args.next().unwrap_or_else(|| "example-agent".into());
    let (client, _events) = Client::connect(Options::new(url).agent(agent.clone())).await?;

    let Some(task) = client.next(None, true).await? else {
        println!("nothing to do");
        return Ok(());
    };
    let token = task.claim.as_ref().map(|c| c.token);
    println!("{agent} took {}: {}", task.id, task.title);
    client.post(PostMessage { content: format!("taking {}: {}", task.id, task.title), ..Default::default() }).await?;
    // ... the actual work would happen here ...
    let done = client.complete(task.id, TaskAction { token, ..Default::default() }).await?;
    println!("{} is {}", done.id, done.status);
    Ok(())
}
