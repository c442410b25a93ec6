//! The threads that serve connections: one single-threaded tokio runtime per core, each
//! driving the connections it was handed from start to end.
//!
//! The accept loops run on the main runtime and hand each accepted connection to the thread
//! serving the fewest. A connection then never moves: its reads, the hot-path lookups and
//! range checks done inline, and its writes stay on one thread and its caches, with no work
//! stealing between threads and no cross-thread wake-ups within a request. On two cores the
//! default multi-threaded scheduler served fewer 4 KiB GETs than this (68–72k against 77k
//! req/s) and fewer ranges (5 % verified, 14 % unverified); a single worker, in turn, left
//! the second core idle for verified range reads (ARCHITECTURE.md, "Concurrency").
//!
//! Blocking work (`spawn_blocking`) goes to the serving runtime's own blocking pool.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

/// The connection threads of the daemon, shared by its listeners.
pub struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
    /// Where the next tie between equally busy threads is broken, so connections opened in
    /// a burst spread over every thread.
    next: AtomicUsize,
}

struct ConnectionThread {
    handle: tokio::runtime::Handle,
    /// Connections being served by this thread.
    serving: Arc<AtomicUsize>,
    /// Dropped to let the thread end; it answers on `ended` once its runtime is gone.
    stop: oneshot::Sender<()>,
    ended: oneshot::Receiver<()>,
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), each with its own runtime.
    pub fn start(count: usize, shutdown_grace: Duration) -> std::io::Result<Self> {
        let threads = (0..count.max(1))
            .map(|index| ConnectionThread::start(index, shutdown_grace))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// One thread per core the process may use.
    pub fn per_core(shutdown_grace: Duration) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self::start(cores, shutdown_grace)
    }

    /// Serves `stream` on the least busy thread: `serve` is called there with the stream
    /// registered with that thread's runtime.
    pub fn serve<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F) -> std::io::Result<()>
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let thread = self.least_busy();
        // Deregistered from the accepting runtime, registered again on the serving one.
        let stream = stream.into_std()?;
        let serving = ServingGuard::new(thread.serving.clone());
        thread.handle.spawn(async move {
            let _serving = serving;
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(error) => tracing::warn!("could not serve a connection: {error}"),
            }
        });
        Ok(())
    }

    fn least_busy(&self) -> &ConnectionThread {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.threads.len();
        (0..count)
            .map(|offset| &self.threads[(start + offset) % count])
            .min_by_key(|thread| thread.serving.load(Ordering::Relaxed))
            .expect("there is at least one thread")
    }

    /// Connections being served, over all threads.
    pub fn serving(&self) -> usize {
        self.threads
            .iter()
            .map(|thread| thread.serving.load(Ordering::Relaxed))
            .sum()
    }

    /// Ends the threads: what they still run is dropped (the listeners have drained their
    /// connections by then), blocking work gets the shutdown grace period to finish.
    pub async fn stop(self) {
        let ended: Vec<_> = self
            .threads
            .into_iter()
            .map(|thread| {
                drop(thread.stop);
                thread.ended
            })
            .collect();
        for ended in ended {
            let _ = ended.await;
        }
    }
}

impl ConnectionThread {
    fn start(index: usize, shutdown_grace: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("connections-{index}-blocking"))
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (end, ended) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("connections-{index}"))
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(shutdown_grace);
                let _ = end.send(());
            })?;
        Ok(Self {
            handle,
            serving: Arc::new(AtomicUsize::new(0)),
            stop,
            ended,
        })
    }
}

/// Counts a connection as served by its thread for as long as it lives.
struct ServingGuard(Arc<AtomicUsize>);

impl ServingGuard {
    fn new(serving: Arc<AtomicUsize>) -> Self {
        serving.fetch_add(1, Ordering::Relaxed);
        Self(serving)
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go to the thread serving the fewest, and each is served on its thread's
    /// runtime (a timer works there).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_go_to_the_least_busy_thread() {
        let threads = ConnectionThreads::start(2, Duration::from_secs(1)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let (names, mut served) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            clients.push(tokio::net::TcpStream::connect(address).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let names = names.clone();
            let mut released = released.clone();
            threads
                .serve(stream, move |_stream| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let name = std::thread::current().name().map(str::to_owned);
                    names.send(name).unwrap();
                    let _ = released.wait_for(|released| *released).await;
                })
                .unwrap();
        }
        let mut per_thread = std::collections::BTreeMap::new();
        for _ in 0..4 {
            let name = served.recv().await.unwrap().expect("threads are named");
            *per_thread.entry(name).or_insert(0) += 1;
        }
        assert_eq!(
            per_thread.into_iter().collect::<Vec<_>>(),
            vec![
                ("connections-0".to_owned(), 2),
                ("connections-1".to_owned(), 2)
            ]
        );
        assert_eq!(threads.serving(), 4);
        release.send(true).unwrap();
        threads.stop().await;
    }
}
