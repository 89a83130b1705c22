//! The engine's settings. One table below makes the `Config` struct, its defaults and the
//! reading of the settings Python passes (`Engine(**settings)`, by name), so a new setting is
//! one line here and its setter in `python/starlette_cometd/builder.py`.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::channel::NameLimits;
use crate::history::{valid_pattern, HistoryRule};

/// Makes `Config`, its `Default` and `Config::from_py` from one line per setting:
/// `/// doc`, `name: Type = default,`. `Type` must implement `Setting`.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr, )+) => {
        /// The engine's settings, fixed when it is built.
        #[derive(Clone, Debug)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        impl Config {
            /// The defaults, with each setting named in `settings` replaced by its value. An
            /// unknown name or a value of the wrong type is a `TypeError`, a value out of range
            /// a `ValueError`.
            pub fn from_py(settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
                let mut config = Self::default();
                for (name, value) in settings.into_iter().flat_map(|s| s.iter()) {
                    let name = name.cast::<PyString>()?;
                    match name.to_str()? {
                        $( stringify!($name) => {
                            config.$name = Setting::from_py(&value, stringify!($name))?
                        } )+
                        other => {
                            return Err(PyTypeError::new_err(format!(
                                "unknown engine setting {other:?}"
                            )))
                        }
                    }
                }
                Ok(config)
            }
        }
    };
}

settings! {
    /// How long a `/meta/connect` is held at most (also `advice.timeout`).
    timeout: Duration = Duration::from_secs(20),
    /// How long a session lives without a `/meta/connect` after its last connect reply.
    max_interval: Duration = Duration::from_secs(60),
    /// `advice.interval`: how long clients wait between a connect reply and the next connect.
    interval: Duration = Duration::ZERO,
    /// The bound on each session's queue.
    queue_capacity: usize = 500,
    /// Skip the `BAYEUX_BROWSER` cookie check (for clients that cannot keep cookies).
    trust_client_session: bool = false,
    /// Advertised in handshake replies, in order of preference.
    connection_types: Vec<String> = vec!["long-polling".to_owned()],
    /// Offer the ack extension to clients that ask for it.
    ack_extension: bool = false,
    /// Answer the timesync extension.
    timesync: bool = false,
    /// Deliver a client's publish to its own session too, when it subscribes.
    broadcast_to_publisher: bool = true,
    /// How many long-polls one browser may have held at once over HTTP/1.x; negative: no limit.
    max_sessions_per_browser: i64 = 1,
    /// `advice.interval` for a connect refused under that limit (`multiple-clients`).
    multi_session_interval: Duration = Duration::from_secs(2),
    /// Advertise `maxInterval` in advice, so clients away longer handshake again directly.
    handshake_reconnect: bool = false,
    /// Deliver messages only in `/meta/connect` replies, never pushed on a WebSocket alone.
    meta_connect_deliver_only: bool = false,
    /// How many sessions may share one `BAYEUX_BROWSER` cookie; `None`: no limit.
    max_sessions_per_cookie: Option<usize> = Some(100),
    /// How many sessions one client address (an IPv4 address, an IPv6 /64) may have at once;
    /// `None`: no limit.
    max_sessions_per_address: Option<usize> = Some(10_000),
    /// Pre-sizing hint: how many sessions the table holds before it grows.
    session_capacity: usize = 0,
    /// Pre-sizing hint: how many channels the subscription index holds before it grows.
    channel_capacity: usize = 0,
    /// Pre-sizing hint: how many subscribers each channel holds before it grows.
    subscriber_capacity: usize = 0,
    /// The longest channel name accepted anywhere, in bytes.
    max_channel_length: usize = 1024,
    /// The most segments a channel name may have (`/a/b/*` has three).
    max_channel_segments: usize = 64,
    /// How deeply arrays and objects may nest in a message's `data`, `ext` or any other field.
    max_data_depth: usize = 128,
    /// How many channels and patterns one session may subscribe to.
    max_subscriptions_per_session: usize = 1000,
    /// How many channels and patterns the subscription index may hold, for every session.
    max_channels: usize = 100_000,
    /// Hand every broadcast publish (a client's or the server's) back in `Outcome.relayed`
    /// instead of fanning it out: in a cluster, publishes go through the shared engine and
    /// come back to every process, which fans them out with `Engine.fan_out`.
    relay_publishes: bool = false,
    /// The channels that keep a history for the replay extension: `(pattern, size, ttl)` rules,
    /// the first matching pattern wins; ttl in seconds, 0 for none.
    history: Vec<HistoryRule> = Vec::new(),
    /// How many channels may keep a history at once (see `history.rs`).
    max_history_channels: usize = 10_000,
}

/// The most `max_data_depth` may be: Python's `json`, which the hooks and Python clients use,
/// stops near 1,000 levels. (The builder's setter says so too.)
pub const MAX_DATA_DEPTH: usize = 512;

impl Config {
    /// Whether the server offers the transport `connection_type` ("long-polling", ...).
    pub fn offers(&self, connection_type: &str) -> bool {
        self.connection_types.iter().any(|t| t == connection_type)
    }

    /// How many replayed messages a session may have undelivered at once: as many as ten
    /// channels with the largest history keep (at least its queue's bound). A replay past it
    /// is refused (until the session's next connect takes what it has), so that asking again
    /// and again without reading cannot grow a queue without bound.
    pub fn max_replayed(&self) -> usize {
        let largest = self.history.iter().map(|rule| rule.size).max().unwrap_or(0);
        (largest * REPLAYED_CHANNELS).max(self.queue_capacity)
    }

    /// How long and how deep channel names may be.
    pub fn name_limits(&self) -> NameLimits {
        NameLimits {
            max_length: self.max_channel_length,
            max_segments: self.max_channel_segments,
        }
    }
}

/// How many channels' whole history a session may have replayed and undelivered at once.
const REPLAYED_CHANNELS: usize = 10;

/// A setting's type, read from the Python value given for it.
trait Setting: Sized {
    fn from_py(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Self>;
}

/// A duration is given in seconds: a non-negative int or float.
impl Setting for Duration {
    fn from_py(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
        let seconds: f64 = value.extract().map_err(|e| wrong_type(name, e))?;
        Duration::try_from_secs_f64(seconds).map_err(|_| {
            PyValueError::new_err(format!(
                "{name} must be a non-negative number of seconds, not {seconds}"
            ))
        })
    }
}

macro_rules! extracted_setting {
    ($($ty:ty),+) => {
        $(impl Setting for $ty {
            fn from_py(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
                value.extract().map_err(|e| wrong_type(name, e))
            }
        })+
    };
}

extracted_setting!(bool, usize, Option<usize>, i64, Vec<String>);

/// History rules are `(pattern, size, ttl)` tuples: a broadcast channel or wildcard pattern,
/// a positive size, a non-negative ttl in seconds (0: none).
impl Setting for Vec<HistoryRule> {
    fn from_py(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
        let rules: Vec<(String, usize, f64)> = value.extract().map_err(|e| wrong_type(name, e))?;
        rules
            .into_iter()
            .map(|(pattern, size, ttl)| {
                if !valid_pattern(&pattern) {
                    return Err(PyValueError::new_err(format!(
                        "{name}: {pattern:?} is not a broadcast channel or pattern"
                    )));
                }
                if size == 0 {
                    return Err(PyValueError::new_err(format!(
                        "{name}: size must be positive"
                    )));
                }
                let ttl = Duration::try_from_secs_f64(ttl).map_err(|_| {
                    PyValueError::new_err(format!("{name}: ttl must be non-negative, not {ttl}"))
                })?;
                Ok(HistoryRule {
                    pattern,
                    size,
                    ttl: (!ttl.is_zero()).then_some(ttl),
                })
            })
            .collect()
    }
}

/// A value that is not of its setting's type, named.
fn wrong_type(name: &str, error: PyErr) -> PyErr {
    PyTypeError::new_err(format!("engine setting {name}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_by_name_and_keeps_the_other_defaults() {
        Python::initialize();
        Python::attach(|py| {
            let settings = PyDict::new(py);
            settings.set_item("timeout", 1.5).unwrap();
            settings.set_item("queue_capacity", 7).unwrap();
            settings
                .set_item("connection_types", ["websocket"])
                .unwrap();
            settings.set_item("timesync", true).unwrap();
            let config = Config::from_py(Some(&settings)).unwrap();
            assert_eq!(config.timeout, Duration::from_millis(1500));
            assert_eq!(config.queue_capacity, 7);
            assert_eq!(config.connection_types, ["websocket"]);
            assert!(config.timesync);
            assert_eq!(config.max_interval, Config::default().max_interval);
            assert_eq!(Config::from_py(None).unwrap().queue_capacity, 500);
        });
    }

    #[test]
    fn refuses_unknown_names_wrong_types_and_negative_durations() {
        Python::initialize();
        Python::attach(|py| {
            let refused = |name: &str, value: Bound<'_, PyAny>| {
                let settings = PyDict::new(py);
                settings.set_item(name, value).unwrap();
                Config::from_py(Some(&settings)).unwrap_err()
            };
            let error = refused("timeuot", 1i64.into_pyobject(py).unwrap().into_any());
            assert!(error.is_instance_of::<PyTypeError>(py));
            assert!(error.to_string().contains("timeuot"));
            let error = refused("timesync", "yes".into_pyobject(py).unwrap().into_any());
            assert!(error.is_instance_of::<PyTypeError>(py));
            let error = refused("interval", (-1.0f64).into_pyobject(py).unwrap().into_any());
            assert!(error.is_instance_of::<PyValueError>(py));
        });
    }
}
