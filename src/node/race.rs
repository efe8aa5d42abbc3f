//! The one checkout race, with its blocking twin: a checkout runs until it
//! has a connection, gives up the moment its node is boxed or a failure is
//! vetoed, or times out; and the async flavour's checkout of a pooled
//! connection through it.

use std::future::Future;
use std::ops::DerefMut;
use std::time::Duration;

use bb8::{PooledConnection, RunError};

use crate::node::clock::Clock;
use crate::node::tracked::{NodeManager, Tracked, TrackedConn};
use crate::node::{Bb8, CheckoutError, Node, Store, Try};

impl<M: NodeManager, S: Store<M>> Node<M, S> {
    /// Whether a checkout that began when the node's vetoes were `vetoes`
    /// may go on: not if the node is boxed or has left the pool (move to
    /// the next node: a removed node is never boxed, and a checkout of it
    /// would otherwise wait for a connection its server may never give
    /// until the checkout timeout), nor if a failure was vetoed since (the
    /// caller gets it).
    fn usable_since(&self, vetoes: u64) -> Result<(), CheckoutError> {
        if !self.cell.is_up() || self.cell.is_retired() {
            return Err(CheckoutError::Boxed);
        }
        self.cell.vetoed_since(vetoes).map_or(Ok(()), |kind| Err(CheckoutError::Failed(kind)))
    }

    /// The one checkout race: runs `attempt` until `judge` finds a value
    /// in what it gave, giving up the moment the node is boxed (move on),
    /// a failure is vetoed (the caller gets it) or the clock's deadline
    /// passes. An attempt that is ready at once (an idle connection: the
    /// common case) is taken without any of the race's machinery. With
    /// `timer` false an attempt that starts as the call did (within a
    /// millisecond of its first wait) is trusted to time out by itself
    /// (the store's own timeout is the checkout timeout), which keeps a
    /// timer registration off the common path.
    ///
    /// With `ask_again`, an attempt that follows a retry is given up after
    /// the connect timeout for a new one (see [`wait`](Self::wait)).
    pub(crate) async fn race<T, F>(
        &self,
        clock: &Clock,
        mut timer: bool,
        ask_again: bool,
        mut attempt: impl FnMut() -> F,
        judge: impl Fn(F::Output) -> Try<T>,
    ) -> Result<T, CheckoutError>
    where
        F: Future,
    {
        let vetoes = self.cell.vetoes();
        let mut again = false;
        loop {
            self.usable_since(vetoes)?;
            let mut current = std::pin::pin!(attempt());
            let once = std::future::poll_fn(|cx| std::task::Poll::Ready(current.as_mut().poll(cx)));
            let outcome = match once.await {
                std::task::Poll::Ready(outcome) => judge(outcome),
                // The race's machinery, boxed: the common path's future
                // (and every move of it) does not carry it.
                std::task::Poll::Pending => {
                    let again = again.then_some(self.connect_timeout);
                    Box::pin(self.wait(current.as_mut(), &judge, vetoes, clock, timer, again))
                        .await?
                }
            };
            match outcome {
                Try::Done(value) => return Ok(value),
                Try::TimedOut => return Err(CheckoutError::TimedOut(clock.waited())),
                Try::Retry => (timer, again) = (true, ask_again),
            }
        }
    }

    /// The race proper, for an attempt that must wait: its outcome, or
    /// `Try::Retry` once a failure of the node is signalled, or
    /// `Try::TimedOut` at the deadline (with `timer`, or once the call has
    /// waited over a millisecond before this attempt began).
    ///
    /// With `again` (an attempt after a retry, from a pool), also
    /// `Try::Retry` once that long passed with nothing: a checkout woken by
    /// a failed connect may ask bb8 before bb8 has counted that connect out
    /// of its pending ones, so bb8 starts no new one for it, and nothing
    /// wakes it again (bb8 wakes waiters for a connection, not for a
    /// failed connect) until the checkout timeout: a hang, with a long
    /// one. Any connect in flight has ended within the connect timeout;
    /// asking again then starts one.
    async fn wait<T, F: Future>(
        &self,
        attempt: std::pin::Pin<&mut F>,
        judge: &impl Fn(F::Output) -> Try<T>,
        vetoes: u64,
        clock: &Clock,
        timer: bool,
        again: Option<Duration>,
    ) -> Result<Try<T>, CheckoutError> {
        // Set up before the second look, so that a failure between the two
        // is not missed.
        let failed = self.cell.failure_signal();
        self.usable_since(vetoes)?;
        let timer = timer || clock.started().elapsed() > Duration::from_millis(1);
        Ok(tokio::select! {
            biased;
            outcome = attempt => judge(outcome),
            () = failed => Try::Retry,
            () = async { tokio::time::sleep(again.unwrap_or_default()).await }, if again.is_some() => {
                Try::Retry
            }
            // In an async block, the timer is not even built unless used.
            () = async { tokio::time::sleep_until(clock.deadline().into()).await }, if timer => {
                Try::TimedOut
            }
        })
    }

    /// The race for a thread that may block: the same exits, looked at
    /// between blocking waits of at most `slice` (what `attempt` is
    /// given), the most it can lag behind its node being boxed.
    #[cfg(feature = "r2d2")]
    pub(crate) fn race_blocking<T>(
        &self,
        clock: &Clock,
        slice: Duration,
        mut attempt: impl FnMut(Duration) -> Try<T>,
    ) -> Result<T, CheckoutError> {
        let vetoes = self.cell.vetoes();
        loop {
            self.usable_since(vetoes)?;
            let left = clock.deadline().saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(CheckoutError::TimedOut(clock.waited()));
            }
            if let Try::Done(value) = attempt(slice.min(left)) {
                return Ok(value);
            }
        }
    }

    /// A connection taken from the store, in either flavour: handed out if
    /// it was made in the node's current epoch (the checkout, timed by
    /// `clock`, is counted), else marked broken, so the store drops it,
    /// and tried again.
    pub(crate) fn fresh<P, C>(&self, mut conn: P, clock: &Clock) -> Try<P>
    where
        P: DerefMut<Target = TrackedConn<C>>,
    {
        if self.cell.accept(conn.epoch, clock.waited()) {
            return Try::Done(conn);
        }
        conn.broken = true;
        Try::Retry
    }
}

impl<M: NodeManager> Node<M, Bb8<M>> {
    /// A connection from the node's bb8 pool by the clock's deadline,
    /// through the checkout race (no future of its own around it).
    pub(crate) fn checkout<'a>(
        &'a self,
        clock: &'a Clock,
    ) -> impl Future<Output = Result<PooledConnection<'static, Tracked<M>>, CheckoutError>> + Send + 'a
    {
        // bb8's own timeout (the checkout timeout) bounds an attempt that
        // starts as the `get` does; only a later one needs a timer of ours.
        let judge = |taken| match taken {
            Ok(conn) => self.fresh(conn, clock),
            Err(RunError::TimedOut) => Try::TimedOut,
            // bb8 0.9 reports connect errors to its error sink, not here;
            // `Tracked` has already told the node's health.
            Err(RunError::User(_)) => Try::Retry,
        };
        self.race(clock, false, true, || self.store.get_owned(), judge)
    }
}
