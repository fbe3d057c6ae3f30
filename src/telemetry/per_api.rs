//! The four ingest APIs as a group: [`PerApi`], one value for each, and
//! [`AllApis`], the client settings they share.

use crate::client::ClientBuilder;

/// The API kind of the [`ClientBuilder`] that
/// [`TelemetryBuilder::client`](crate::TelemetryBuilder::client) configures:
/// settings for the metric, event, log and trace clients at once.
///
/// It has no values and no `build()`: the builder only collects settings, and
/// [`Telemetry`](crate::Telemetry) builds the four clients from them.
///
/// ```
/// use newrelic_telemetry::{AllApis, RetryPolicy};
/// use newrelic_telemetry::client::ClientBuilder;
/// use std::time::Duration;
///
/// // A function that configures the clients of any Telemetry it is given to.
/// fn patient(clients: ClientBuilder<AllApis>) -> ClientBuilder<AllApis> {
///     clients
///         .timeout(Duration::from_secs(30))
///         .retry_policy(RetryPolicy::default().max_retries(3))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = newrelic_telemetry::test_util::TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().client(patient).build()?;
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllApis {}

/// A change to the four clients' shared settings, from
/// [`TelemetryBuilder::client`](crate::TelemetryBuilder::client).
pub(crate) type ConfigureClients =
    Box<dyn FnOnce(ClientBuilder<AllApis>) -> ClientBuilder<AllApis> + Send + Sync>;

/// One `T` for each ingest API, named rather than indexed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PerApi<T> {
    /// The Metric API's.
    pub(crate) metric: T,
    /// The Event API's.
    pub(crate) event: T,
    /// The Log API's.
    pub(crate) log: T,
    /// The Trace API's.
    pub(crate) trace: T,
}

impl<T> PerApi<T> {
    /// Pairs each API's value with its value in `other`.
    pub(crate) fn zip<U>(self, other: PerApi<U>) -> PerApi<(T, U)> {
        PerApi {
            metric: (self.metric, other.metric),
            event: (self.event, other.event),
            log: (self.log, other.log),
            trace: (self.trace, other.trace),
        }
    }

    /// Applies `f` to each API's value, in the order metric, event, log,
    /// trace, stopping at the first error.
    pub(crate) fn try_map<U, E>(
        self,
        mut f: impl FnMut(T) -> Result<U, E>,
    ) -> Result<PerApi<U>, E> {
        Ok(PerApi {
            metric: f(self.metric)?,
            event: f(self.event)?,
            log: f(self.log)?,
            trace: f(self.trace)?,
        })
    }

    /// The four values, in the order metric, event, log, trace.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        [&self.metric, &self.event, &self.log, &self.trace].into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::PerApi;

    fn numbered() -> PerApi<u32> {
        PerApi {
            metric: 1,
            event: 2,
            log: 3,
            trace: 4,
        }
    }

    #[test]
    fn zip_pairs_the_same_api() {
        let names = PerApi {
            metric: "m",
            event: "e",
            log: "l",
            trace: "t",
        };
        let zipped = numbered().zip(names);
        assert_eq!((zipped.metric, zipped.trace), ((1, "m"), (4, "t")));
    }

    #[test]
    fn try_map_stops_at_the_first_error_in_api_order() {
        let mut seen = Vec::new();
        let result = numbered().try_map(|n| {
            seen.push(n);
            if n == 2 { Err(n) } else { Ok(n * 10) }
        });
        assert_eq!(result, Err(2));
        assert_eq!(seen, [1, 2]);
        assert_eq!(
            numbered().try_map(|n| Ok::<_, ()>(n * 10)).map(|p| p.log),
            Ok(30)
        );
    }

    #[test]
    fn iter_is_in_api_order() {
        assert_eq!(numbered().iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }
}
