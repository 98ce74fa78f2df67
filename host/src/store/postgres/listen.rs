//! LISTEN/NOTIFY: a connection of its own listens for news of work (a run
//! created or released by any host), which wakes the idle executors of this
//! process, and for cancel requests, which reach the runs' holders. Hosts also poll, so a missed or late notice costs a poll
//! interval, never a run; after a lost connection everyone is woken once,
//! since notices sent meanwhile are gone.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel runnable work is announced on.
pub const WORK_CHANNEL: &str = "cairn_work";
/// The channel cancel requests are announced on, the run's id as payload.
pub const CANCEL_CHANNEL: &str = "cairn_cancel";

/// Listens on [`WORK_CHANNEL`] and [`CANCEL_CHANNEL`] for as long as the
/// store lives, reconnecting with backoff. A cancel request missed while the
/// connection was down still reaches its run's holder at its next heartbeat.
pub async fn run(
    config: tokio_postgres::Config,
    work: Arc<tokio::sync::Notify>,
    cancels: tokio::sync::broadcast::Sender<String>,
    server: Arc<str>,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection only makes progress while its messages are polled.
                let statement = format!("LISTEN {WORK_CHANNEL}; LISTEN {CANCEL_CHANNEL}");
                let listen = client.batch_execute(&statement);
                let listening = tokio::select! {
                    done = listen => done.is_ok(),
                    _ = async { while messages.next().await.is_some() {} } => false,
                };
                if listening {
                    wait = Duration::from_millis(100);
                    work.notify_waiters();
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(notice)) if notice.channel() == CANCEL_CHANNEL => {
                                let _ = cancels.send(notice.payload().to_owned());
                            }
                            Ok(AsyncMessage::Notification(_)) => work.notify_waiters(),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!("the notice connection to {server} failed: {e}");
                                break;
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(e) => tracing::debug!("cannot listen for notices on {server}: {e}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
