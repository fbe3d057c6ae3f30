//! The four ingest APIs as a group: [`PerApi`], one value for each, and
//! the change to the client settings they share.

use crate::client::ClientSettings;

/// A change to the four clients' shared settings, from
/// [`TelemetryBuilder::client`](crate::TelemetryBuilder::client).
pub(crate) type ConfigureClients = Box<dyn FnOnce(ClientSettings) -> ClientSettings + Send + Sync>;

/// One `T` for each ingest API, named rather than indexed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PerApi<T> {
    /// The Metric API's.
    pub(crate) metrics: T,
    /// The Event API's.
    pub(crate) events: T,
    /// The Log API's.
    pub(crate) logs: T,
    /// The Trace API's.
    pub(crate) spans: T,
}

impl<T> PerApi<T> {
    /// Pairs each API's value with its value in `other`.
    pub(crate) fn zip<U>(self, other: PerApi<U>) -> PerApi<(T, U)> {
        PerApi {
            metrics: (self.metrics, other.metrics),
            events: (self.events, other.events),
            logs: (self.logs, other.logs),
            spans: (self.spans, other.spans),
        }
    }

    /// Applies `f` to each API's value, in the order metric, event, log,
    /// span, stopping at the first error.
    pub(crate) fn try_map<U, E>(
        self,
        mut f: impl FnMut(T) -> Result<U, E>,
    ) -> Result<PerApi<U>, E> {
        Ok(PerApi {
            metrics: f(self.metrics)?,
            events: f(self.events)?,
            logs: f(self.logs)?,
            spans: f(self.spans)?,
        })
    }

    /// The four values, in the order metric, event, log, span.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        [&self.metrics, &self.events, &self.logs, &self.spans].into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::PerApi;

    fn numbered() -> PerApi<u32> {
        PerApi {
            metrics: 1,
            events: 2,
            logs: 3,
            spans: 4,
        }
    }

    #[test]
    fn zip_pairs_the_same_api() {
        let names = PerApi {
            metrics: "m",
            events: "e",
            logs: "l",
            spans: "t",
        };
        let zipped = numbered().zip(names);
        assert_eq!((zipped.metrics, zipped.spans), ((1, "m"), (4, "t")));
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
            numbered().try_map(|n| Ok::<_, ()>(n * 10)).map(|p| p.logs),
            Ok(30)
        );
    }

    #[test]
    fn iter_is_in_api_order() {
        assert_eq!(numbered().iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }
}
