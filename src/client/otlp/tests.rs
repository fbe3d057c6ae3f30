//! The OTLP encoder's output decoded by an independent decoder: `prost`, with
//! the messages of opentelemetry-proto (`metrics/v1/metrics.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`,
//! `collector/metrics/v1/metrics_service.proto`) declared below by hand,
//! field numbers and types as the `.proto` files give them. Every encoded
//! request must decode to the message the inputs describe, and be byte for
//! byte what prost itself encodes for that message. The response decoder is
//! fed prost's encodings, hand-made wire bytes (unknown fields of every wire
//! type, groups, faults) and arbitrary bytes.

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message as _;

use super::*;

/// opentelemetry-proto's messages, as much of them as the encoder writes
/// (plus fields it never writes, so that a stray write would show).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub(crate) resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportMetricsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub(crate) partial_success: Option<ExportMetricsPartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportMetricsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub(crate) rejected_data_points: i64,
        #[prost(string, tag = "2")]
        pub(crate) error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub(crate) resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) scope_metrics: Vec<ScopeMetrics>,
        #[prost(string, tag = "3")]
        pub(crate) schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub(crate) attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub(crate) dropped_attributes_count: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub(crate) scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) metrics: Vec<Metric>,
        #[prost(string, tag = "3")]
        pub(crate) schema_url: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(string, tag = "2")]
        pub(crate) version: String,
        #[prost(message, repeated, tag = "3")]
        pub(crate) attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub(crate) dropped_attributes_count: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct KeyValue {
        #[prost(string, tag = "1")]
        pub(crate) key: String,
        #[prost(message, optional, tag = "2")]
        pub(crate) value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 7")]
        pub(crate) value: Option<any_value::Value>,
    }

    pub(crate) mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub(crate) enum Value {
            #[prost(string, tag = "1")]
            String(String),
            #[prost(bool, tag = "2")]
            Bool(bool),
            #[prost(int64, tag = "3")]
            Int(i64),
            #[prost(double, tag = "4")]
            Double(f64),
            #[prost(bytes, tag = "7")]
            Bytes(Vec<u8>),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Metric {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(string, tag = "2")]
        pub(crate) description: String,
        #[prost(string, tag = "3")]
        pub(crate) unit: String,
        #[prost(oneof = "metric::Data", tags = "5, 10")]
        pub(crate) data: Option<metric::Data>,
    }

    pub(crate) mod metric {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub(crate) enum Data {
            /// A gauge (never written: a stray field 5 would decode here).
            #[prost(bytes, tag = "5")]
            Gauge(Vec<u8>),
            #[prost(message, tag = "10")]
            ExponentialHistogram(super::ExponentialHistogram),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExponentialHistogram {
        #[prost(message, repeated, tag = "1")]
        pub(crate) data_points: Vec<ExponentialHistogramDataPoint>,
        /// AggregationTemporality (an enum: a varint).
        #[prost(int32, tag = "2")]
        pub(crate) aggregation_temporality: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExponentialHistogramDataPoint {
        #[prost(message, repeated, tag = "1")]
        pub(crate) attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub(crate) start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub(crate) time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub(crate) count: u64,
        #[prost(double, optional, tag = "5")]
        pub(crate) sum: Option<f64>,
        #[prost(sint32, tag = "6")]
        pub(crate) scale: i32,
        #[prost(fixed64, tag = "7")]
        pub(crate) zero_count: u64,
        #[prost(message, optional, tag = "8")]
        pub(crate) positive: Option<Buckets>,
        #[prost(message, optional, tag = "9")]
        pub(crate) negative: Option<Buckets>,
        #[prost(uint32, tag = "10")]
        pub(crate) flags: u32,
        #[prost(bytes, repeated, tag = "11")]
        pub(crate) exemplars: Vec<Vec<u8>>,
        #[prost(double, optional, tag = "12")]
        pub(crate) min: Option<f64>,
        #[prost(double, optional, tag = "13")]
        pub(crate) max: Option<f64>,
        #[prost(double, tag = "14")]
        pub(crate) zero_threshold: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Buckets {
        #[prost(sint32, tag = "1")]
        pub(crate) offset: i32,
        #[prost(uint64, repeated, tag = "2")]
        pub(crate) bucket_counts: Vec<u64>,
    }
}

// ---------------------------------------------------------------------------
// What a request should be: the inputs mapped to the messages
// ---------------------------------------------------------------------------

fn any_value(value: &Value) -> pb::AnyValue {
    use pb::any_value::Value as V;
    let value = match value {
        Value::String(s) => V::String(s.to_string()),
        Value::Bool(b) => V::Bool(*b),
        Value::Int(i) => V::Int(*i),
        Value::Float(f) => V::Double(*f),
    };
    pb::AnyValue { value: Some(value) }
}

fn key_value(key: &str, value: &Value) -> pb::KeyValue {
    pb::KeyValue {
        key: key.to_owned(),
        value: Some(any_value(value)),
    }
}

fn key_values(attributes: &Attributes) -> Vec<pb::KeyValue> {
    attributes.iter().map(|(k, v)| key_value(k, v)).collect()
}

fn expected_buckets(buckets: &Buckets) -> Option<pb::Buckets> {
    (!buckets.counts.is_empty()).then(|| pb::Buckets {
        offset: buckets.offset,
        bucket_counts: buckets.counts.clone(),
    })
}

fn expected_point(p: &ExponentialPoint) -> pb::ExponentialHistogramDataPoint {
    pb::ExponentialHistogramDataPoint {
        attributes: key_values(&p.attributes),
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        count: p.count,
        sum: p.sum.is_finite().then_some(p.sum),
        scale: p.scale,
        zero_count: p.zero_count,
        positive: expected_buckets(&p.positive),
        negative: expected_buckets(&p.negative),
        flags: 0,
        exemplars: Vec::new(),
        min: (p.count > 0 && p.min.is_finite()).then_some(p.min),
        max: (p.count > 0 && p.max.is_finite()).then_some(p.max),
        zero_threshold: if p.zero_threshold.is_finite() {
            p.zero_threshold
        } else {
            0.0
        },
    }
}

fn expected_metric(m: &ExponentialMetric) -> pb::Metric {
    pb::Metric {
        name: m.name.to_string(),
        description: m.description.as_deref().unwrap_or("").to_owned(),
        unit: m.unit.as_deref().unwrap_or("").to_owned(),
        data: Some(pb::metric::Data::ExponentialHistogram(
            pb::ExponentialHistogram {
                data_points: m.points.iter().map(expected_point).collect(),
                aggregation_temporality: 1, // AGGREGATION_TEMPORALITY_DELTA
            },
        )),
    }
}

fn expected_request(
    resource: &OtlpResource<'_>,
    metrics: &[ExponentialMetric],
) -> pb::ExportMetricsServiceRequest {
    let mut attributes = Vec::new();
    let own_name = resource
        .attributes
        .is_some_and(|a| a.get("service.name").is_some());
    if let (Some(name), false) = (resource.service_name, own_name) {
        attributes.push(key_value("service.name", &Value::from(name)));
    }
    if let Some(common) = resource.attributes {
        attributes.extend(key_values(common));
    }
    pb::ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: Some(pb::Resource {
                attributes,
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![pb::ScopeMetrics {
                scope: Some(pb::InstrumentationScope {
                    name: "newrelic-telemetry".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                metrics: metrics.iter().map(expected_metric).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn decode_request(bytes: &[u8]) -> pb::ExportMetricsServiceRequest {
    pb::ExportMetricsServiceRequest::decode(bytes).expect("prost decodes the encoder's output")
}

/// Encodes, decodes with prost, and checks the message and the bytes.
fn assert_round_trip(resource: &OtlpResource<'_>, metrics: &[ExponentialMetric]) -> Vec<u8> {
    let bytes = encode_request(resource, metrics);
    let expected = expected_request(resource, metrics);
    assert_eq!(decode_request(&bytes), expected);
    assert_eq!(
        bytes,
        expected.encode_to_vec(),
        "canonical bytes, as prost writes them"
    );
    bytes
}

fn attrs(pairs: &[(&str, Value)]) -> Arc<Attributes> {
    Arc::new(pairs.iter().cloned().collect())
}

fn point() -> ExponentialPoint {
    ExponentialPoint {
        start_time_unix_nano: 1_700_000_000_000_000_000,
        time_unix_nano: 1_700_000_005_000_000_000,
        ..ExponentialPoint::default()
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[test]
fn every_field_round_trips_through_prost() {
    let common = Attributes::from_iter([
        ("host", Value::from("web-1")),
        ("shard", Value::from(-3)),
        ("canary", Value::from(true)),
        ("weight", Value::from(0.25)),
    ]);
    let resource = OtlpResource {
        attributes: Some(&common),
        service_name: Some("checkout"),
    };
    let metrics = vec![
        ExponentialMetric {
            name: "http.server.duration".into(),
            description: Some("Time to answer a request".into()),
            unit: Some("ms".into()),
            points: vec![
                // Both sides, a negative offset, attributes of each type.
                ExponentialPoint {
                    attributes: attrs(&[
                        ("route", Value::from("/orders")),
                        ("status", Value::from(200)),
                        ("error", Value::from(false)),
                        ("ratio", Value::from(-1.5)),
                        ("empty", Value::from("")),
                        ("min.int", Value::from(i64::MIN)),
                    ]),
                    count: 9,
                    sum: 12.75,
                    min: -4.0,
                    max: 8.0,
                    scale: 3,
                    zero_count: 1,
                    positive: Buckets {
                        offset: -7,
                        counts: vec![1, 0, 2, 3],
                    },
                    negative: Buckets {
                        offset: 16,
                        counts: vec![2],
                    },
                    ..point()
                },
                // Zeros only: no buckets on either side.
                ExponentialPoint {
                    attributes: attrs(&[("route", Value::from("/health"))]),
                    count: 4,
                    sum: 0.0,
                    min: 0.0,
                    max: 0.0,
                    scale: 20,
                    zero_count: 4,
                    ..point()
                },
                // A negative scale and a zero threshold.
                ExponentialPoint {
                    count: 2,
                    sum: 1e300,
                    min: 1e-300,
                    max: 1e300,
                    scale: -10,
                    zero_threshold: 1e-9,
                    positive: Buckets {
                        offset: -1,
                        counts: vec![1, 1],
                    },
                    ..point()
                },
            ],
        },
        // No description or unit; extreme values.
        ExponentialMetric {
            name: "queue.wait".into(),
            description: None,
            unit: None,
            points: vec![
                ExponentialPoint {
                    attributes: attrs(&[("q", Value::from("jobs"))]),
                    start_time_unix_nano: u64::MAX - 1,
                    time_unix_nano: u64::MAX,
                    count: u64::MAX,
                    sum: f64::MAX,
                    min: f64::MIN_POSITIVE,
                    max: f64::MAX,
                    scale: i32::MIN,
                    zero_count: 0,
                    positive: Buckets {
                        offset: i32::MIN,
                        counts: vec![u64::MAX, 0, 1 << 63],
                    },
                    negative: Buckets {
                        offset: i32::MAX,
                        counts: vec![127, 128, 16_383, 16_384],
                    },
                    ..point()
                },
                ExponentialPoint {
                    attributes: attrs(&[("q", Value::from("mail"))]),
                    count: 1,
                    sum: 2.0,
                    min: 2.0,
                    max: 2.0,
                    positive: Buckets {
                        offset: 0,
                        counts: vec![1],
                    },
                    ..point()
                },
            ],
        },
    ];
    let bytes = assert_round_trip(&resource, &metrics);

    // A few fields read back by name, so that the mapping itself is checked
    // and not only its agreement with `expected_request`.
    let request = decode_request(&bytes);
    let rm = &request.resource_metrics[0];
    let resource_attrs = &rm.resource.as_ref().unwrap().attributes;
    assert_eq!(resource_attrs[0].key, "service.name");
    assert_eq!(
        resource_attrs[0].value,
        Some(pb::AnyValue {
            value: Some(pb::any_value::Value::String("checkout".into()))
        })
    );
    assert_eq!(resource_attrs.len(), 5);
    let sm = &rm.scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().name, "newrelic-telemetry");
    assert_eq!(sm.metrics.len(), 2);
    assert_eq!(sm.metrics[0].unit, "ms");
    let Some(pb::metric::Data::ExponentialHistogram(h)) = &sm.metrics[0].data else {
        panic!("an exponential histogram")
    };
    assert_eq!(h.aggregation_temporality, 1);
    assert_eq!(h.data_points.len(), 3);
    let p = &h.data_points[0];
    assert_eq!((p.count, p.zero_count, p.scale), (9, 1, 3));
    assert_eq!((p.sum, p.min, p.max), (Some(12.75), Some(-4.0), Some(8.0)));
    assert_eq!(p.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(p.time_unix_nano, 1_700_000_005_000_000_000);
    let positive = p.positive.as_ref().unwrap();
    assert_eq!(
        (positive.offset, &positive.bucket_counts[..]),
        (-7, &[1, 0, 2, 3][..])
    );
    assert_eq!(p.negative.as_ref().unwrap().offset, 16);
    assert_eq!(p.attributes.len(), 6);
    let zeros = &h.data_points[1];
    assert_eq!((zeros.count, zeros.zero_count), (4, 4));
    assert_eq!(
        (zeros.positive.as_ref(), zeros.negative.as_ref()),
        (None, None)
    );
    assert_eq!(zeros.sum, Some(0.0), "a known sum of 0 is sent");
    assert_eq!(h.data_points[2].scale, -10);
    assert_eq!(h.data_points[2].zero_threshold, 1e-9);
}

#[test]
fn a_point_is_written_field_by_field_as_the_proto_says() {
    // Bytes worked out by hand from metrics.proto: fixed64 times and counts,
    // `optional double` sum/min/max, sint32 (zigzag) scale and offset,
    // packed uint64 bucket counts (one key, one length, the varints).
    let p = ExponentialPoint {
        attributes: attrs(&[("k", Value::from(true))]),
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        count: 4,
        sum: 1.5,
        min: 0.5,
        max: 1.0,
        scale: -1,
        zero_count: 1,
        zero_threshold: 0.0,
        positive: Buckets {
            offset: -2,
            counts: vec![1, 300],
        },
        negative: Buckets::default(),
    };
    let mut buf = Vec::new();
    encode_point(&mut buf, &p);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &[0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x10, 0x01][..], // 1: KeyValue{k, bool_value true}
        &[0x11, 1, 0, 0, 0, 0, 0, 0, 0],                              // 2: fixed64 start
        &[0x19, 2, 0, 0, 0, 0, 0, 0, 0],                              // 3: fixed64 time
        &[0x21, 4, 0, 0, 0, 0, 0, 0, 0],                              // 4: fixed64 count
        &[0x29, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f],                        // 5: double 1.5
        &[0x30, 0x01],                                                // 6: sint32 -1
        &[0x39, 1, 0, 0, 0, 0, 0, 0, 0],                              // 7: fixed64 zero_count
        &[0x42, 0x07, 0x08, 0x03, 0x12, 0x03, 0x01, 0xac, 0x02],      // 8: {offset -2, packed [1, 300]}
        &[0x61, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f],                        // 12: double 0.5
        &[0x69, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f],                        // 13: double 1.0
    ]
    .concat();
    assert_eq!(buf, expected);
}

#[test]
fn bucket_counts_are_packed() {
    // A thousand counts: one field-2 entry whose length is the sum of the
    // varints (prost reads unpacked too, so this is checked on the wire).
    let counts: Vec<u64> = (0..1000).map(|i| i * 1000).collect();
    let buckets = Buckets {
        offset: 5,
        counts: counts.clone(),
    };
    let mut buf = Vec::new();
    put_buckets(&mut buf, 8, (buckets.offset, &buckets.counts));
    let mut outer = WireReader::new(&buf);
    let field = outer.next_field().unwrap().unwrap();
    assert_eq!(field.number, 8);
    assert!(outer.next_field().unwrap().is_none());
    let mut inner = WireReader::new(field.bytes().unwrap());
    let offset = inner.next_field().unwrap().unwrap();
    assert_eq!((offset.number, offset.value), (1, WireValue::Varint(10)));
    let packed = inner.next_field().unwrap().unwrap();
    assert_eq!(packed.number, 2);
    let packed = packed.bytes().unwrap();
    let varints: usize = counts.iter().map(|&c| varint_len(c)).sum();
    assert_eq!(packed.len(), varints);
    assert!(
        inner.next_field().unwrap().is_none(),
        "one entry for all counts"
    );
    let decoded = pb::Buckets::decode(field.bytes().unwrap()).unwrap();
    assert_eq!(decoded.bucket_counts, counts);
}

#[test]
fn service_name_is_a_default_that_a_common_attribute_overrides() {
    let own = Attributes::from_iter([("service.name", "mine"), ("zone", "b")]);
    for (attributes, service_name, want) in [
        (
            Some(&own),
            Some("default"),
            vec!["service.name=mine", "zone=b"],
        ),
        (None, Some("default"), vec!["service.name=default"]),
        (Some(&own), None, vec!["service.name=mine", "zone=b"]),
        (None, None, vec![]),
    ] {
        let resource = OtlpResource {
            attributes,
            service_name,
        };
        let bytes = assert_round_trip(&resource, &[]);
        let request = decode_request(&bytes);
        let got: Vec<String> = request.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| match &kv.value.as_ref().unwrap().value {
                Some(pb::any_value::Value::String(s)) => format!("{}={s}", kv.key),
                other => panic!("a string value, not {other:?}"),
            })
            .collect();
        assert_eq!(got, want);
        assert!(
            request.resource_metrics[0].scope_metrics[0]
                .metrics
                .is_empty()
        );
    }
}

#[test]
fn values_that_are_not_finite_or_not_known_are_left_out() {
    let metrics = vec![ExponentialMetric {
        name: "m".into(),
        points: vec![
            ExponentialPoint {
                count: 2,
                sum: f64::INFINITY, // overflowed
                min: 1.0,
                max: f64::NAN,
                zero_threshold: f64::NAN,
                positive: Buckets {
                    offset: 0,
                    counts: vec![2],
                },
                ..point()
            },
            // No value in the interval: no min or max; an offset with no
            // counts is no bucket range.
            ExponentialPoint {
                count: 0,
                sum: 0.0,
                min: 7.0,
                max: 7.0,
                positive: Buckets {
                    offset: 9,
                    counts: vec![],
                },
                ..point()
            },
        ],
        ..ExponentialMetric::default()
    }];
    let bytes = assert_round_trip(&OtlpResource::default(), &metrics);
    let request = decode_request(&bytes);
    let Some(pb::metric::Data::ExponentialHistogram(h)) =
        &request.resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!("an exponential histogram")
    };
    let [overflowed, empty] = &h.data_points[..] else {
        panic!("two points")
    };
    assert_eq!(
        (overflowed.sum, overflowed.min, overflowed.max),
        (None, Some(1.0), None)
    );
    assert_eq!(overflowed.zero_threshold, 0.0);
    assert_eq!(
        (empty.count, empty.sum, empty.min, empty.max),
        (0, Some(0.0), None, None)
    );
    assert_eq!(empty.positive, None);
}

#[test]
fn long_messages_get_longer_lengths_and_the_encoder_knows_its_size() {
    // Lengths of one, two and three bytes at every level: 160 buckets a
    // side, hundreds of points, a name pushed twice.
    let many = |n: u64| ExponentialPoint {
        attributes: attrs(&[("series", Value::from(n as i64))]),
        count: 320 * 1000 + n,
        sum: n as f64,
        min: -1.0,
        max: 1.0,
        scale: 4,
        zero_count: n,
        positive: Buckets {
            offset: -80,
            counts: vec![1000; 160],
        },
        negative: Buckets {
            offset: -80,
            counts: vec![1000; 160],
        },
        ..point()
    };
    let resource = OtlpResource {
        attributes: None,
        service_name: Some("svc"),
    };
    let first: Vec<ExponentialPoint> = (0..300).map(many).collect();
    let second: Vec<ExponentialPoint> = (300..301).map(many).collect();
    let metrics = vec![
        ExponentialMetric {
            name: "latency".into(),
            points: first,
            ..ExponentialMetric::default()
        },
        ExponentialMetric {
            name: "latency".into(),
            points: second,
            ..ExponentialMetric::default()
        },
    ];
    let bytes = assert_round_trip(&resource, &metrics);
    assert!(
        bytes.len() > 1 << 14,
        "lengths past two varint bytes ({})",
        bytes.len()
    );

    let mut encoder = RequestEncoder::new(&resource);
    let mut sizes = vec![encoder.encoded_len()];
    for metric in &metrics {
        encoder.push_metric(&metric.name, "", "", &metric.points);
        sizes.push(encoder.encoded_len());
    }
    assert_eq!(encoder.points(), 301);
    assert_eq!(*sizes.last().unwrap(), bytes.len());
    assert!(sizes.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(encoder.finish(), bytes);
    // The size of a request with no metric is its own too.
    assert_eq!(
        RequestEncoder::new(&resource).encoded_len(),
        encode_request(&resource, &[]).len()
    );
}

#[test]
fn primitives_match_their_definitions() {
    for (v, len) in [
        (0, 1),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (u64::from(u32::MAX), 5),
        ((1 << 63) - 1, 9),
        (1 << 63, 10),
        (u64::MAX, 10),
    ] {
        let mut buf = Vec::new();
        put_varint(&mut buf, v);
        assert_eq!((buf.len(), varint_len(v)), (len, len), "{v}");
        assert_eq!(
            WireReader::new(&[&[0x08][..], &buf].concat())
                .next_field()
                .unwrap()
                .unwrap()
                .value,
            WireValue::Varint(v)
        );
    }
    for (n, z) in [
        (0, 0),
        (-1, 1),
        (1, 2),
        (-2, 3),
        (i32::MAX, u32::MAX - 1),
        (i32::MIN, u32::MAX),
    ] {
        assert_eq!(zigzag32(n), z, "{n}");
    }
}

fn metric_strategy() -> impl Strategy<Value = ExponentialMetric> {
    let text = || proptest::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter);
    let value = prop_oneof![
        text().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
    ];
    let attributes = proptest::collection::vec((text(), value), 0..4)
        .prop_map(|pairs| Arc::new(pairs.into_iter().collect::<Attributes>()));
    let buckets = (any::<i32>(), proptest::collection::vec(any::<u64>(), 0..20))
        .prop_map(|(offset, counts)| Buckets { offset, counts });
    let float = prop_oneof![
        8 => -1e300f64..1e300,
        1 => Just(0.0),
        1 => Just(f64::INFINITY),
    ];
    let point = (
        attributes,
        (any::<u64>(), any::<u64>(), 0u64..3, any::<u64>()),
        (float.clone(), float.clone(), float),
        (
            any::<i32>(),
            any::<u64>(),
            prop_oneof![Just(0.0), 0.0f64..1e-3],
        ),
        (buckets.clone(), buckets),
    )
        .prop_map(
            |(
                attributes,
                (start, time, small, large),
                (sum, min, max),
                (scale, zero_count, zero_threshold),
                (positive, negative),
            )| {
                ExponentialPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    // Counts of 0 and 1 often, so min and max come and go.
                    count: if small < 2 { small } else { large },
                    sum,
                    min,
                    max,
                    scale,
                    zero_count,
                    zero_threshold,
                    positive,
                    negative,
                }
            },
        );
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec(point, 0..4),
    )
        .prop_map(|(name, description, unit, points)| ExponentialMetric {
            name: name.into(),
            description: description.map(Into::into),
            unit: unit.map(Into::into),
            points,
        })
}

proptest! {
    #[test]
    fn any_request_round_trips_through_prost(
        common in proptest::collection::vec((0u8..4, any::<i64>()), 0..4),
        service_name in proptest::option::of(proptest::sample::select(vec!["checkout", "", "é"])),
        metrics in proptest::collection::vec(metric_strategy(), 0..4),
    ) {
        let common: Attributes = common
            .into_iter()
            .map(|(k, v)| (["service.name", "a", "b", "c"][usize::from(k)], Value::from(v)))
            .collect();
        let resource = OtlpResource {
            attributes: (!common.is_empty()).then_some(&common),
            service_name,
        };
        let bytes = encode_request(&resource, &metrics);
        let expected = expected_request(&resource, &metrics);
        prop_assert_eq!(decode_request(&bytes), expected.clone());
        prop_assert_eq!(bytes, expected.encode_to_vec());
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn response(rejected: i64, message: &str) -> Vec<u8> {
    pb::ExportMetricsServiceResponse {
        partial_success: Some(pb::ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message.to_owned(),
        }),
    }
    .encode_to_vec()
}

fn partial(rejected: u64, message: &str) -> Option<PartialSuccess> {
    Some(PartialSuccess {
        rejected_data_points: rejected,
        error_message: message.to_owned(),
    })
}

/// Raw wire bytes, written independently of the encoder under test.
fn key(field: u64, wire_type: u64) -> Vec<u8> {
    raw_varint((field << 3) | wire_type)
}

fn raw_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

fn len_field(field: u64, body: &[u8]) -> Vec<u8> {
    [key(field, 2), raw_varint(body.len() as u64), body.to_vec()].concat()
}

fn reason(body: &[u8]) -> DecodeErrorReason {
    decode_response(body).expect_err("a malformed body").reason
}

#[test]
fn an_empty_body_or_an_empty_partial_success_is_full_success() {
    assert_eq!(decode_response(&[]), Ok(None));
    assert_eq!(
        decode_response(&pb::ExportMetricsServiceResponse::default().encode_to_vec()),
        Ok(None)
    );
    // partial_success present but empty: nothing was refused, nothing said.
    assert_eq!(decode_response(&[0x0a, 0x00]), Ok(None));
    assert_eq!(decode_response(&response(0, "")), Ok(None));
}

#[test]
fn rejected_points_are_read_with_their_message() {
    let got = decode_response(&response(5, "metric name too long")).unwrap();
    assert_eq!(got, partial(5, "metric name too long"));
    assert!(got.unwrap().has_rejections());
    let got = decode_response(&response(i64::MAX, "")).unwrap().unwrap();
    assert_eq!(got.rejected_data_points, i64::MAX as u64);
}

#[test]
fn a_message_with_no_rejection_is_a_warning() {
    let got = decode_response(&response(0, "attribute value truncated"))
        .unwrap()
        .unwrap();
    assert!(!got.has_rejections());
    assert_eq!(got.error_message, "attribute value truncated");
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let inner = [
        key(9, 0),
        raw_varint(u64::MAX),
        key(1, 0),
        raw_varint(3),
        key(10, 1),
        vec![0xff; 8],
        key(11, 5),
        vec![0xee; 4],
        len_field(12, b"\x01\x02\x03"),
        len_field(2, "rejected: bad scale".as_bytes()),
        // A group holding a nested group and a field of each type.
        key(13, 3),
        key(1, 0),
        raw_varint(1),
        key(14, 3),
        len_field(2, b"x"),
        key(14, 4),
        key(3, 1),
        vec![0; 8],
        key(13, 4),
        key(536_870_911, 0), // the highest field number
        raw_varint(0),
    ]
    .concat();
    let body = [
        key(2, 0),
        raw_varint(150),
        key(3, 1),
        vec![0; 8],
        len_field(1, &inner),
        key(4, 5),
        vec![1, 2, 3, 4],
        len_field(5, b"an unknown message"),
        key(6, 3),
        key(6, 4),
    ]
    .concat();
    assert_eq!(
        decode_response(&body),
        Ok(partial(3, "rejected: bad scale"))
    );
    // prost, an independent decoder, reads the same.
    let theirs = pb::ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    assert_eq!(
        theirs.partial_success,
        Some(pb::ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "rejected: bad scale".into()
        })
    );
}

#[test]
fn a_partial_success_sent_twice_is_merged() {
    let body = [
        response(4, "first"),
        len_field(1, &[key(2, 2), raw_varint(4), b"last".to_vec()].concat()),
    ]
    .concat();
    assert_eq!(decode_response(&body), Ok(partial(4, "last")));
    let theirs = pb::ExportMetricsServiceResponse::decode(&body[..])
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(
        (theirs.rejected_data_points, &theirs.error_message[..]),
        (4, "last")
    );
}

#[test]
fn every_cut_of_a_response_is_an_error() {
    let body = response(12, "some points were refused");
    for cut in 1..body.len() {
        let err = decode_response(&body[..cut]).expect_err("a truncated body");
        assert_eq!(err.reason, DecodeErrorReason::Truncated, "cut at {cut}");
        assert!(err.offset <= cut, "the offset is within the body");
    }
}

#[test]
fn malformed_bodies_are_refused_with_their_reason_and_place() {
    use DecodeErrorReason as R;
    assert_eq!(reason(&[0x08]), R::Truncated);
    assert_eq!(reason(&[0x0a, 0x05, 0x08]), R::Truncated);
    assert_eq!(reason(&[0x09, 1, 2, 3]), R::Truncated); // fixed64 cut
    assert_eq!(reason(&[0x0d, 1, 2]), R::Truncated); // fixed32 cut
    assert_eq!(reason(&[0x80]), R::Truncated); // a key cut
    // A length past the body, and one past usize.
    assert_eq!(reason(&[0x12, 0x80, 0x80, 0x80, 0x80, 0x08]), R::Truncated);
    assert_eq!(
        reason(&[&[0x12][..], &[0xff; 9], &[0x01]].concat()),
        R::Truncated
    );
    assert_eq!(reason(&[0xff; 11]), R::VarintOverflow);
    assert_eq!(
        reason(&[&[0x10][..], &[0xff; 9], &[0x02]].concat()),
        R::VarintOverflow
    );
    assert_eq!(reason(&[0x0e]), R::InvalidWireType(6));
    assert_eq!(reason(&[0x0f]), R::InvalidWireType(7));
    assert_eq!(reason(&[0x00, 0x00]), R::InvalidFieldNumber(0));
    assert_eq!(reason(&raw_varint(1 << 32)), R::InvalidFieldNumber(1 << 29));
    assert_eq!(reason(&[0x0c]), R::UnmatchedEndGroup);
    assert_eq!(reason(&[0x13, 0x1c]), R::UnmatchedEndGroup); // group 2 closed as 3
    assert_eq!(reason(&[0x13, 0x08]), R::Truncated); // a group never closed
    assert_eq!(
        reason(&[0x08, 0x01]),
        R::WrongWireType {
            field: 1,
            wire_type: 0
        }
    );
    assert_eq!(
        reason(&len_field(1, &len_field(1, b""))),
        R::WrongWireType {
            field: 1,
            wire_type: 2
        }
    );
    assert_eq!(reason(&response(-1, "")), R::NegativeCount(-1));

    // The place is in the whole body, inside the embedded message too.
    let err = decode_response(&[0x18, 0x00, 0x0a, 0x02, 0x08, 0xff]).unwrap_err();
    assert_eq!((err.offset, err.reason.clone()), (5, R::Truncated));
    assert_eq!(
        err.to_string(),
        "malformed OTLP export response at byte 5: the body ends inside a field"
    );
    let err = decode_response(&[0x18, 0x00, 0x0a, 0x02, 0x08, 0x01, 0x0a, 0x01, 0x0f]).unwrap_err();
    assert_eq!((err.offset, err.reason), (8, R::InvalidWireType(7)));
}

#[test]
fn groups_nest_to_a_bound() {
    let nested = |depth: usize| {
        let open: Vec<u8> = (0..depth).flat_map(|_| key(7, 3)).collect();
        let close: Vec<u8> = (0..depth).flat_map(|_| key(7, 4)).collect();
        [open, close].concat()
    };
    let max = MAX_GROUP_DEPTH as usize;
    assert_eq!(decode_response(&nested(max)), Ok(None));
    assert_eq!(reason(&nested(max + 1)), DecodeErrorReason::TooDeep);
    // Deep enough to overflow a stack if nothing bounded it.
    assert_eq!(reason(&nested(1_000_000)), DecodeErrorReason::TooDeep);
}

#[test]
fn a_message_is_kept_lossy_and_bounded() {
    let mut body = len_field(
        1,
        &[key(1, 0), raw_varint(1), len_field(2, b"bad \xff byte")].concat(),
    );
    assert_eq!(decode_response(&body), Ok(partial(1, "bad \u{fffd} byte")));
    // 4095 ASCII bytes then a two-byte character: cut before it.
    let long = format!("{}é and more", "x".repeat(MAX_ERROR_MESSAGE_BYTES - 1));
    body = response(2, &long);
    let got = decode_response(&body).unwrap().unwrap();
    assert_eq!(got.error_message, "x".repeat(MAX_ERROR_MESSAGE_BYTES - 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let ours = decode_response(&body);
        // Where prost, independently, reads a valid response, so do we.
        if let Ok(theirs) = pb::ExportMetricsServiceResponse::decode(&body[..]) {
            let want = theirs.partial_success.and_then(|p| {
                let rejected = u64::try_from(p.rejected_data_points).ok()?;
                Some((rejected, p.error_message))
            });
            if let Some((rejected, message)) = want {
                if message.len() <= MAX_ERROR_MESSAGE_BYTES {
                    let ours = ours.expect("prost read it");
                    let expected = (rejected > 0 || !message.is_empty()).then_some(PartialSuccess {
                        rejected_data_points: rejected,
                        error_message: message,
                    });
                    prop_assert_eq!(ours, expected);
                }
            }
        }
    }

    #[test]
    fn any_response_with_unknown_fields_decodes(
        rejected in any::<i64>(),
        message in proptest::collection::vec(any::<char>(), 0..20).prop_map(String::from_iter),
        noise in proptest::collection::vec((16u64..1000, 0usize..4, any::<u64>()), 0..6),
    ) {
        let unknown: Vec<u8> = noise
            .iter()
            .flat_map(|&(field, kind, v)| match kind {
                0 => [key(field, 0), raw_varint(v)].concat(),
                1 => [key(field, 1), v.to_le_bytes().to_vec()].concat(),
                2 => len_field(field, &v.to_le_bytes()[..(v % 9) as usize]),
                _ => [key(field, 5), (v as u32).to_le_bytes().to_vec()].concat(),
            })
            .collect();
        let inner = pb::ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message: message.clone() }.encode_to_vec();
        let body = [unknown.clone(), len_field(1, &[unknown.clone(), inner].concat()), unknown].concat();
        let got = decode_response(&body);
        if rejected < 0 {
            prop_assert_eq!(got.map_err(|e| e.reason), Err(DecodeErrorReason::NegativeCount(rejected)));
        } else {
            let expected = (rejected > 0 || !message.is_empty()).then_some(PartialSuccess {
                rejected_data_points: rejected as u64,
                error_message: message,
            });
            prop_assert_eq!(got, Ok(expected));
        }
    }
}

// ---------------------------------------------------------------------------
// Requests decoded (the receiving side)
// ---------------------------------------------------------------------------

/// What [`super::decode_request`] should read from `encode_request(resource,
/// metrics)`: the inputs as the wire carries them.
fn expected_decoded(resource: &OtlpResource<'_>, metrics: &[ExponentialMetric]) -> DecodedRequest {
    let mut attributes = Attributes::new();
    let own_name = resource
        .attributes
        .is_some_and(|a| a.get("service.name").is_some());
    if let (Some(name), false) = (resource.service_name, own_name) {
        attributes.insert("service.name", name);
    }
    if let Some(common) = resource.attributes {
        attributes.extend(common.iter().map(|(k, v)| (k, v.clone())));
    }
    let side = |b: &Buckets| {
        if b.counts.is_empty() {
            Buckets::default()
        } else {
            b.clone()
        }
    };
    let point = |p: &ExponentialPoint| DecodedPoint {
        attributes: (*p.attributes).clone(),
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        count: p.count,
        sum: p.sum.is_finite().then_some(p.sum),
        scale: p.scale,
        zero_count: p.zero_count,
        positive: side(&p.positive),
        negative: side(&p.negative),
        flags: 0,
        min: (p.count > 0 && p.min.is_finite()).then_some(p.min),
        max: (p.count > 0 && p.max.is_finite()).then_some(p.max),
        zero_threshold: if p.zero_threshold.is_finite() {
            p.zero_threshold
        } else {
            0.0
        },
    };
    DecodedRequest {
        resource_metrics: vec![DecodedResourceMetrics {
            resource: attributes,
            scope_metrics: vec![DecodedScopeMetrics {
                scope_name: "newrelic-telemetry".to_owned(),
                scope_version: env!("CARGO_PKG_VERSION").to_owned(),
                metrics: metrics
                    .iter()
                    .map(|m| DecodedMetric {
                        name: m.name.to_string(),
                        description: m.description.as_deref().unwrap_or("").to_owned(),
                        unit: m.unit.as_deref().unwrap_or("").to_owned(),
                        aggregation_temporality: 1,
                        points: m.points.iter().map(point).collect(),
                    })
                    .collect(),
            }],
        }],
        skipped_metrics: 0,
    }
}

fn from_pb_attributes(key_values: &[pb::KeyValue]) -> Attributes {
    use pb::any_value::Value as V;
    let mut out = Attributes::new();
    for kv in key_values {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::String(s)) => Value::from(s.as_str()),
            Some(V::Bool(b)) => Value::Bool(*b),
            Some(V::Int(i)) => Value::Int(*i),
            Some(V::Double(f)) => Value::Float(*f),
            Some(V::Bytes(_)) | None => continue,
        };
        out.insert(kv.key.as_str(), value);
    }
    out
}

/// prost's reading of a request, mapped to the decoder's types: the
/// independent decoder's answer.
fn from_pb(request: &pb::ExportMetricsServiceRequest) -> DecodedRequest {
    let mut skipped = 0;
    let resource_metrics = request
        .resource_metrics
        .iter()
        .map(|rm| DecodedResourceMetrics {
            resource: rm
                .resource
                .as_ref()
                .map(|r| from_pb_attributes(&r.attributes))
                .unwrap_or_default(),
            scope_metrics: rm
                .scope_metrics
                .iter()
                .map(|sm| DecodedScopeMetrics {
                    scope_name: sm
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    scope_version: sm
                        .scope
                        .as_ref()
                        .map(|s| s.version.clone())
                        .unwrap_or_default(),
                    metrics: sm
                        .metrics
                        .iter()
                        .filter_map(|m| {
                            let Some(pb::metric::Data::ExponentialHistogram(h)) = &m.data else {
                                skipped += 1;
                                return None;
                            };
                            let side = |b: &Option<pb::Buckets>| {
                                b.as_ref()
                                    .map(|b| Buckets {
                                        offset: b.offset,
                                        counts: b.bucket_counts.clone(),
                                    })
                                    .unwrap_or_default()
                            };
                            Some(DecodedMetric {
                                name: m.name.clone(),
                                description: m.description.clone(),
                                unit: m.unit.clone(),
                                aggregation_temporality: h.aggregation_temporality,
                                points: h
                                    .data_points
                                    .iter()
                                    .map(|p| DecodedPoint {
                                        attributes: from_pb_attributes(&p.attributes),
                                        start_time_unix_nano: p.start_time_unix_nano,
                                        time_unix_nano: p.time_unix_nano,
                                        count: p.count,
                                        sum: p.sum,
                                        scale: p.scale,
                                        zero_count: p.zero_count,
                                        positive: side(&p.positive),
                                        negative: side(&p.negative),
                                        flags: p.flags,
                                        min: p.min,
                                        max: p.max,
                                        zero_threshold: p.zero_threshold,
                                    })
                                    .collect(),
                            })
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    DecodedRequest {
        resource_metrics,
        skipped_metrics: skipped,
    }
}

fn decoded(body: &[u8]) -> DecodedRequest {
    super::decode_request(body).expect("a valid request")
}

fn request_reason(body: &[u8]) -> DecodeErrorReason {
    super::decode_request(body)
        .expect_err("a malformed request")
        .0
        .reason
}

/// A request with one metric of one point, encoded.
fn one_point_request(p: ExponentialPoint) -> Vec<u8> {
    encode_request(
        &OtlpResource::default(),
        &[ExponentialMetric {
            name: "m".into(),
            points: vec![p],
            ..ExponentialMetric::default()
        }],
    )
}

#[test]
fn a_request_decodes_to_what_was_encoded() {
    let common = Attributes::from_iter([
        ("host", Value::from("web-1")),
        ("shard", Value::from(-3)),
        ("canary", Value::from(true)),
        ("weight", Value::from(0.25)),
    ]);
    let resource = OtlpResource {
        attributes: Some(&common),
        service_name: Some("checkout"),
    };
    let metrics = vec![
        ExponentialMetric {
            name: "http.server.duration".into(),
            description: Some("Time to answer a request".into()),
            unit: Some("ms".into()),
            points: vec![ExponentialPoint {
                attributes: attrs(&[
                    ("route", Value::from("/orders")),
                    ("min.int", Value::from(i64::MIN)),
                ]),
                count: 9,
                sum: 12.75,
                min: -4.0,
                max: 8.0,
                scale: -3,
                zero_count: 1,
                zero_threshold: 1e-9,
                positive: Buckets {
                    offset: -7,
                    counts: vec![1, 0, 2, 3],
                },
                negative: Buckets {
                    offset: i32::MIN,
                    counts: vec![2, u64::MAX],
                },
                ..point()
            }],
        },
        ExponentialMetric {
            name: "queue.wait".into(),
            points: vec![
                ExponentialPoint {
                    count: 0,
                    ..point()
                },
                ExponentialPoint {
                    count: 2,
                    sum: f64::INFINITY,
                    min: 1.0,
                    max: f64::NAN,
                    positive: Buckets {
                        offset: 3,
                        counts: vec![2],
                    },
                    ..point()
                },
            ],
            ..ExponentialMetric::default()
        },
    ];
    let bytes = encode_request(&resource, &metrics);
    let got = decoded(&bytes);
    assert_eq!(got, expected_decoded(&resource, &metrics));
    assert_eq!(got, from_pb(&decode_request_pb(&bytes)));
    // A few fields by name.
    let rm = &got.resource_metrics[0];
    assert_eq!(
        rm.resource.get("service.name"),
        Some(&Value::from("checkout"))
    );
    assert_eq!(rm.resource.len(), 5);
    let m = &rm.scope_metrics[0].metrics[0];
    assert_eq!(
        (m.name.as_str(), m.unit.as_str()),
        ("http.server.duration", "ms")
    );
    let p = &m.points[0];
    assert_eq!(
        (p.count, p.sum, p.min, p.max),
        (9, Some(12.75), Some(-4.0), Some(8.0))
    );
    assert_eq!((p.scale, p.zero_count, p.zero_threshold), (-3, 1, 1e-9));
    assert_eq!(p.negative.offset, i32::MIN);
    let overflowed = &rm.scope_metrics[0].metrics[1].points[1];
    assert_eq!(
        (overflowed.sum, overflowed.min, overflowed.max),
        (None, Some(1.0), None)
    );
    let empty = &rm.scope_metrics[0].metrics[1].points[0];
    assert_eq!((empty.count, empty.sum, empty.min), (0, Some(0.0), None));
    // Nothing: one resource and one scope with no metric.
    let none = decoded(&encode_request(&OtlpResource::default(), &[]));
    assert_eq!(none.resource_metrics[0].scope_metrics[0].metrics, []);
    assert_eq!(decoded(&[]), DecodedRequest::default());
}

fn decode_request_pb(bytes: &[u8]) -> pb::ExportMetricsServiceRequest {
    pb::ExportMetricsServiceRequest::decode(bytes).expect("prost decodes it")
}

#[test]
fn a_decoded_point_rebuilds_the_distribution_it_was_made_from() {
    let mut d = crate::distribution::Distribution::new();
    for v in [-40.0, -1.5, 0.0, 0.0, 1e-3, 2.0, 3.0, 250.0, 1e5] {
        d.record(v).unwrap();
    }
    let bytes = one_point_request(ExponentialPoint::from_distribution(
        &d,
        attrs(&[("route", Value::from("/"))]),
        1,
        2,
    ));
    let point = &decoded(&bytes).resource_metrics[0].scope_metrics[0].metrics[0].points[0];
    let rebuilt = point.to_distribution().unwrap();
    assert_eq!(rebuilt, d);
    for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
        assert_eq!(rebuilt.quantile(q), d.quantile(q), "q {q}");
    }
    // An empty distribution: no min, no max, an empty rebuild.
    let empty = crate::distribution::Distribution::new();
    let bytes = one_point_request(ExponentialPoint::from_distribution(
        &empty,
        attrs(&[]),
        1,
        2,
    ));
    let point = &decoded(&bytes).resource_metrics[0].scope_metrics[0].metrics[0].points[0];
    assert_eq!((point.min, point.max), (None, None));
    assert_eq!(point.to_distribution().unwrap(), empty);
    // No sum, or counts that do not add up: refused.
    let mut no_sum = point.clone();
    no_sum.count = 1;
    no_sum.zero_count = 1;
    no_sum.sum = None;
    no_sum.min = Some(0.0);
    no_sum.max = Some(0.0);
    assert!(matches!(
        no_sum.to_distribution(),
        Err(DistributionError::InvalidParts {
            reason: crate::distribution::PartsError::NonFiniteSum { .. }
        })
    ));
    no_sum.sum = Some(0.0);
    assert!(no_sum.to_distribution().is_ok());
    no_sum.count = 2;
    assert!(matches!(
        no_sum.to_distribution(),
        Err(DistributionError::InvalidParts {
            reason: crate::distribution::PartsError::CountMismatch {
                count: 2,
                in_buckets: 1
            }
        })
    ));
}

#[test]
fn other_metric_types_and_unknown_fields_are_skipped() {
    use pb::any_value::Value as V;
    let kv = |key: &str, value: Option<V>| pb::KeyValue {
        key: key.to_owned(),
        value: Some(pb::AnyValue { value }),
    };
    let point = pb::ExponentialHistogramDataPoint {
        attributes: vec![
            kv("keep", Some(V::Int(7))),
            kv("raw", Some(V::Bytes(vec![1, 2]))), // bytes: left out
            kv("nothing", None),                   // no value: left out
            kv("keep", Some(V::String("last wins".into()))),
        ],
        count: 3,
        sum: Some(6.0),
        scale: 2,
        zero_count: 1,
        positive: Some(pb::Buckets {
            offset: 4,
            bucket_counts: vec![1, 1],
        }),
        flags: 1,
        exemplars: vec![b"an exemplar".to_vec()],
        min: Some(0.0),
        max: Some(4.0),
        ..Default::default()
    };
    let exponential = pb::Metric {
        name: "kept".into(),
        data: Some(pb::metric::Data::ExponentialHistogram(
            pb::ExponentialHistogram {
                data_points: vec![point],
                aggregation_temporality: 2,
            },
        )),
        ..Default::default()
    };
    let gauge = pb::Metric {
        name: "a gauge".into(),
        data: Some(pb::metric::Data::Gauge(b"\x0a\x00".to_vec())),
        ..Default::default()
    };
    let no_data = pb::Metric {
        name: "no data".into(),
        ..Default::default()
    };
    let message = pb::ExportMetricsServiceRequest {
        resource_metrics: vec![
            pb::ResourceMetrics {
                resource: Some(pb::Resource {
                    attributes: vec![kv("service.name", Some(V::String("svc".into())))],
                    dropped_attributes_count: 4,
                }),
                scope_metrics: vec![pb::ScopeMetrics {
                    scope: Some(pb::InstrumentationScope {
                        name: "other-sdk".into(),
                        version: "9".into(),
                        attributes: vec![kv("x", Some(V::Bool(true)))],
                        dropped_attributes_count: 1,
                    }),
                    metrics: vec![gauge, exponential.clone(), no_data],
                    schema_url: "https://example.com/schema".into(),
                }],
                schema_url: "https://example.com/schema".into(),
            },
            pb::ResourceMetrics::default(),
        ],
    };
    // Metrics of types prost's declaration here does not know (sum 7,
    // histogram 9, summary 11), a metadata field (12), unknown fields of
    // every wire type and a group, in a third ResourceMetrics.
    let sum_metric = [len_field(1, b"a sum"), len_field(7, b"\x0a\x00")].concat();
    let histogram_metric = [len_field(1, b"a histogram"), len_field(9, b"")].concat();
    // The oneof's last member wins: an exponential histogram, then a summary.
    let summary_metric = [
        len_field(1, b"was exponential"),
        len_field(
            10,
            &len_field(1, &[key(4, 1), 5u64.to_le_bytes().to_vec()].concat()),
        ),
        len_field(11, b""),
    ]
    .concat();
    let noise = [
        key(90, 0),
        raw_varint(u64::MAX),
        key(91, 1),
        vec![7; 8],
        key(92, 5),
        vec![7; 4],
        len_field(93, b"??"),
        key(94, 3),
        key(1, 0),
        raw_varint(1),
        key(94, 4),
    ]
    .concat();
    let build = |with_summary: bool| {
        let mut scope = [
            noise.clone(),
            len_field(2, &[sum_metric.clone(), noise.clone()].concat()),
            len_field(2, &histogram_metric),
            len_field(2, &[len_field(12, b"metadata"), noise.clone()].concat()),
        ]
        .concat();
        if with_summary {
            scope.extend(len_field(2, &summary_metric));
        }
        let mut body = message.encode_to_vec();
        body.extend(len_field(
            1,
            &[noise.clone(), len_field(2, &scope), noise.clone()].concat(),
        ));
        body.extend(&noise);
        body
    };

    let got = decoded(&build(true));
    assert_eq!(got.skipped_metrics, 2 + 4);
    assert_eq!(got.resource_metrics.len(), 3);
    let rm = &got.resource_metrics[0];
    assert_eq!(
        rm.resource,
        Attributes::from_iter([("service.name", "svc")])
    );
    let scope = &rm.scope_metrics[0];
    assert_eq!(
        (scope.scope_name.as_str(), scope.scope_version.as_str()),
        ("other-sdk", "9")
    );
    assert_eq!(scope.metrics.len(), 1);
    let m = &scope.metrics[0];
    assert_eq!((m.name.as_str(), m.aggregation_temporality), ("kept", 2));
    let p = &m.points[0];
    assert_eq!(p.attributes, Attributes::from_iter([("keep", "last wins")]));
    assert_eq!((p.count, p.scale, p.flags, p.zero_count), (3, 2, 1, 1));
    assert_eq!(
        p.positive,
        Buckets {
            offset: 4,
            counts: vec![1, 1]
        }
    );
    assert_eq!(got.resource_metrics[1], DecodedResourceMetrics::default());
    assert!(got.resource_metrics[2].scope_metrics[0].metrics.is_empty());
    // prost reads the same (the metric types its declaration here does not
    // know are metrics with no data to it; a summary after an exponential
    // histogram would be an exponential histogram to it, so it is left out).
    let body = build(false);
    let without_summary = decoded(&body);
    assert_eq!(without_summary.skipped_metrics, 2 + 3);
    assert_eq!(without_summary, from_pb(&decode_request_pb(&body)));
}

#[test]
fn fields_sent_twice_are_merged_as_protobuf_says() {
    // A point whose scalars come twice (the last wins), whose positive
    // buckets come in two messages (the offset of the last, the counts of
    // both, one packed and one not), in a metric whose exponential
    // histogram comes twice (points accumulate).
    let buckets_a = [key(1, 0), raw_varint(10), len_field(2, &[1, 2])].concat();
    let buckets_b = [key(1, 0), raw_varint(3), key(2, 0), raw_varint(300)].concat();
    let point = [
        key(4, 1),
        1u64.to_le_bytes().to_vec(),
        key(4, 1),
        303u64.to_le_bytes().to_vec(),
        key(6, 0),
        raw_varint(7),
        len_field(8, &buckets_a),
        len_field(8, &buckets_b),
    ]
    .concat();
    let metric = [
        len_field(1, b"first name"),
        len_field(10, &len_field(1, &point)),
        len_field(1, b"m"),
        len_field(10, &[len_field(1, b""), key(2, 0), raw_varint(1)].concat()),
    ]
    .concat();
    let body = len_field(1, &len_field(2, &len_field(2, &metric)));
    let got = decoded(&body);
    let m = &got.resource_metrics[0].scope_metrics[0].metrics[0];
    assert_eq!(
        (m.name.as_str(), m.aggregation_temporality, m.points.len()),
        ("m", 1, 2)
    );
    let p = &m.points[0];
    assert_eq!((p.count, p.scale), (303, -4));
    assert_eq!(
        p.positive,
        Buckets {
            offset: -2,
            counts: vec![1, 2, 300]
        }
    );
    assert_eq!(got, from_pb(&decode_request_pb(&body)));
}

#[test]
fn malformed_requests_are_refused_with_their_reason_and_place() {
    use DecodeErrorReason as R;
    let body = one_point_request(ExponentialPoint {
        attributes: attrs(&[("k", Value::from("v"))]),
        count: 2,
        sum: 3.0,
        min: 1.0,
        max: 2.0,
        positive: Buckets {
            offset: 0,
            counts: vec![1, 1],
        },
        ..point()
    });
    // The body is one field: every cut is inside it.
    for cut in 1..body.len() {
        let err = super::decode_request(&body[..cut])
            .expect_err("a cut request")
            .0;
        assert_eq!(err.reason, R::Truncated, "cut at {cut}");
        assert!(err.offset <= cut, "the offset is within the body");
    }
    let wrap_point = |p: &[u8]| {
        len_field(
            1,
            &len_field(2, &len_field(2, &len_field(10, &len_field(1, p)))),
        )
    };
    // A fixed64 count sent as a varint, a double as a fixed32.
    assert_eq!(
        request_reason(&wrap_point(&[key(4, 0), raw_varint(2)].concat())),
        R::WrongWireType {
            field: 4,
            wire_type: 0
        }
    );
    assert_eq!(
        request_reason(&wrap_point(&[key(5, 5), vec![0; 4]].concat())),
        R::WrongWireType {
            field: 5,
            wire_type: 5
        }
    );
    // Bucket counts as fixed64.
    assert_eq!(
        request_reason(&wrap_point(&len_field(
            8,
            &[key(2, 1), vec![0; 8]].concat()
        ))),
        R::WrongWireType {
            field: 2,
            wire_type: 1
        }
    );
    // A packed varint cut short.
    assert_eq!(
        request_reason(&wrap_point(&len_field(8, &len_field(2, &[0x80])))),
        R::Truncated
    );
    // A resource_metrics that is not a message.
    assert_eq!(
        request_reason(&[key(1, 0), raw_varint(1)].concat()),
        R::WrongWireType {
            field: 1,
            wire_type: 0
        }
    );
    // A metric name that is not UTF-8, in place.
    let bad_name = len_field(1, &len_field(2, &len_field(2, &len_field(1, b"\xff\xfe"))));
    let err = super::decode_request(&bad_name).unwrap_err();
    assert_eq!(
        (err.0.reason.clone(), err.0.offset),
        (R::InvalidUtf8 { field: 1 }, 6)
    );
    assert_eq!(
        err.to_string(),
        "malformed OTLP ExportMetricsServiceRequest at byte 6: field 1 is a string that is not UTF-8"
    );
    // An attribute value's unsupported kinds must still be messages.
    let attribute = len_field(
        1,
        &[
            len_field(1, b"k"),
            len_field(2, &[key(5, 0), raw_varint(1)].concat()),
        ]
        .concat(),
    );
    assert_eq!(
        request_reason(&wrap_point(&attribute)),
        R::WrongWireType {
            field: 5,
            wire_type: 0
        }
    );
    // Groups nest to a bound here too.
    let deep: Vec<u8> = [
        (0..200).flat_map(|_| key(7, 3)).collect::<Vec<u8>>(),
        (0..200).flat_map(|_| key(7, 4)).collect(),
    ]
    .concat();
    assert_eq!(request_reason(&deep), R::TooDeep);
}

#[test]
fn responses_and_statuses_encode_as_prost_reads_them() {
    assert_eq!(encode_response(None), Vec::<u8>::new());
    assert_eq!(decode_response(&encode_response(None)), Ok(None));
    for (rejected, message) in [
        (3, "scale out of range"),
        (0, "a warning"),
        (1, ""),
        (u64::from(u32::MAX) + 1, "é"),
    ] {
        let partial = PartialSuccess {
            rejected_data_points: rejected,
            error_message: message.to_owned(),
        };
        let bytes = encode_response(Some(&partial));
        assert_eq!(decode_response(&bytes), Ok(Some(partial)));
        assert_eq!(
            bytes,
            response(rejected as i64, message),
            "as prost writes it"
        );
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let bytes = encode_status(STATUS_INVALID_ARGUMENT, "bad bytes");
    let status = Status::decode(&bytes[..]).unwrap();
    assert_eq!((status.code, status.message.as_str()), (3, "bad bytes"));
    assert_eq!(bytes, status.encode_to_vec());
}

proptest! {
    #[test]
    fn any_request_decodes_to_what_was_encoded(
        common in proptest::collection::vec((0u8..4, any::<i64>()), 0..4),
        service_name in proptest::option::of(proptest::sample::select(vec!["checkout", "", "é"])),
        metrics in proptest::collection::vec(metric_strategy(), 0..4),
    ) {
        let common: Attributes = common
            .into_iter()
            .map(|(k, v)| (["service.name", "a", "b", "c"][usize::from(k)], Value::from(v)))
            .collect();
        let resource = OtlpResource {
            attributes: (!common.is_empty()).then_some(&common),
            service_name,
        };
        let bytes = encode_request(&resource, &metrics);
        let got = super::decode_request(&bytes);
        prop_assert_eq!(got.as_ref(), Ok(&expected_decoded(&resource, &metrics)));
        prop_assert_eq!(got, Ok(from_pb(&decode_request_pb(&bytes))));
    }

    #[test]
    fn any_distribution_crosses_the_wire_with_its_quantiles(
        values in proptest::collection::vec(
            prop_oneof![-1e6f64..1e6, Just(0.0), 1e-300f64..1e-290, 1e290f64..1e300],
            0..200,
        ),
    ) {
        let mut d = crate::distribution::Distribution::new();
        for v in values {
            d.record(v).unwrap();
        }
        let bytes = one_point_request(ExponentialPoint::from_distribution(&d, attrs(&[]), 0, 1));
        let got = decoded(&bytes);
        let rebuilt = got.resource_metrics[0].scope_metrics[0].metrics[0].points[0]
            .to_distribution()
            .unwrap();
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            prop_assert_eq!(rebuilt.quantile(q), d.quantile(q));
        }
        prop_assert_eq!(rebuilt, d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic_the_request_decoder(
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        match super::decode_request(&body) {
            Ok(request) => {
                // Where prost reads it too, both count the same resources.
                if let Ok(theirs) = pb::ExportMetricsServiceRequest::decode(&body[..]) {
                    prop_assert_eq!(request.resource_metrics.len(), theirs.resource_metrics.len());
                }
            }
            Err(err) => prop_assert!(err.0.offset <= body.len()),
        }
    }

    #[test]
    fn mutated_requests_never_panic_the_decoder(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut d = crate::distribution::Distribution::new();
        for v in [-3.0, 0.0, 1.0, 2.5, 1e4] {
            d.record(v).unwrap();
        }
        let mut body = one_point_request(ExponentialPoint::from_distribution(
            &d,
            attrs(&[("route", Value::from("/a")), ("n", Value::from(1))]),
            5,
            6,
        ));
        for (at, byte, kind) in edits {
            let i = at.index(body.len());
            match kind {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => body.truncate(i),
            }
            if body.is_empty() {
                break;
            }
        }
        if let Ok(request) = super::decode_request(&body) {
            for point in request
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .flat_map(|m| &m.points)
            {
                // Rebuilding checks, never panics; a valid rebuild reads.
                if let Ok(rebuilt) = point.to_distribution() {
                    let _ = rebuilt.quantile(0.99);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The client's requests: one whole `resource_metrics` entry per point
// ---------------------------------------------------------------------------

/// The request that `write_point_entry`'s entries make, one per point: each
/// is the request of that point alone, so they concatenate.
fn expected_entries(
    resource: &OtlpResource<'_>,
    points: &[DistributionPoint],
) -> pb::ExportMetricsServiceRequest {
    pb::ExportMetricsServiceRequest {
        resource_metrics: points
            .iter()
            .flat_map(|p| {
                let metric = ExponentialMetric {
                    name: p.name().into(),
                    points: vec![ExponentialPoint::from_distribution(
                        p.distribution(),
                        p.shared_attributes().clone(),
                        p.start_ms() * 1_000_000,
                        p.end_ms() * 1_000_000,
                    )],
                    ..ExponentialMetric::default()
                };
                expected_request(resource, &[metric]).resource_metrics
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn the_clients_point_entries_concatenate_into_one_request_prost_reads(
        common in proptest::collection::vec((0u8..3, any::<i64>()), 0..3),
        points in proptest::collection::vec(
            (
                proptest::collection::vec(-1e6f64..1e6, 0..40),
                proptest::collection::vec((0u8..3, any::<i64>()), 0..3),
                0u64..4_000_000_000_000,
            ),
            0..5,
        ),
    ) {
        let common: Attributes = common
            .into_iter()
            .map(|(k, v)| (["service.name", "host", "region"][usize::from(k)], Value::from(v)))
            .collect();
        let resource = OtlpResource {
            attributes: (!common.is_empty()).then_some(&common),
            service_name: None,
        };
        let points: Vec<DistributionPoint> = points
            .into_iter()
            .enumerate()
            .map(|(i, (values, attributes, start_ms))| {
                let mut d = Distribution::new();
                for v in values {
                    d.record(v).map_err(fail)?;
                }
                let attributes: Attributes = attributes
                    .into_iter()
                    .map(|(k, v)| (["route", "code", "zone"][usize::from(k)], Value::from(v)))
                    .collect();
                Ok(DistributionPoint::in_interval(
                    format!("metric.{i}").into(),
                    Arc::new(attributes),
                    start_ms,
                    start_ms + 5_000,
                    d,
                ))
            })
            .collect::<Result<_, TestCaseError>>()?;
        let mut bytes = Vec::new();
        for point in &points {
            write_point_entry(&mut bytes, &resource, point);
        }
        let expected = expected_entries(&resource, &points);
        prop_assert_eq!(decode_request(&bytes), expected.clone());
        prop_assert_eq!(bytes, expected.encode_to_vec());
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

#[test]
fn rejected_points_are_read_from_an_answer_cut_short() {
    // A partial success with a message longer than the client reads.
    let message = "x".repeat(40_000);
    let whole = response(7, &message);
    assert!(decode_response(&whole[..16 * 1024]).is_err());
    assert_eq!(rejected_in_prefix(&whole[..16 * 1024]), Some(7));
    assert_eq!(rejected_in_prefix(&whole), Some(7));
    // Not a partial success, or cut before the count: nothing.
    assert_eq!(rejected_in_prefix(&[]), None);
    assert_eq!(rejected_in_prefix(&whole[..2]), None);
    assert_eq!(rejected_in_prefix(&response(0, "")[..]), None);
}
