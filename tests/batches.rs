//! Aggregation rules, series identity, interval accounting, concurrency and
//! input validation of the batches.

use std::sync::Arc;
use std::time::Duration;

use newrelic_telemetry::{
    Attributes, CountMetric, Event, EventBatch, GaugeMetric, Log, LogBatch, Metric, MetricBatch,
    MetricKind, RecordError, Span, SpanBatch, SpanEvent, Summary, SummaryMetric, Value, attrs,
};

mod support;

fn find<'a>(metrics: &'a [Metric], kind: MetricKind, name: &str) -> Vec<&'a Metric> {
    metrics
        .iter()
        .filter(|m| m.kind() == kind && m.name() == name)
        .collect()
}

fn count_value(m: &Metric) -> f64 {
    match m {
        Metric::Count(c) => c.value(),
        other => panic!("not a count: {other:?}"),
    }
}

#[tokio::test]
async fn counts_add_gauges_keep_last_summaries_merge() {
    let batch = MetricBatch::new();
    for v in [1.0, 2.0, 3.5] {
        batch.record_count("c", v, [("k", "v")]).await;
        batch.record_gauge("g", v, [("k", "v")]).await;
        batch.record_summary("s", v, [("k", "v")]).await;
    }
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 3);
    assert_eq!(count_value(find(&metrics, MetricKind::Count, "c")[0]), 6.5);
    match find(&metrics, MetricKind::Gauge, "g")[0] {
        Metric::Gauge(g) => assert_eq!(g.value(), 3.5),
        _ => unreachable!(),
    }
    match find(&metrics, MetricKind::Summary, "s")[0] {
        Metric::Summary(s) => assert_eq!(s.summary(), Summary::new(3, 6.5, 1.0, 3.5)),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn identity_is_type_name_and_attribute_set_in_any_order() {
    let batch = MetricBatch::new();
    batch
        .record_count("req", 1.0, [("a", "1"), ("b", "2")])
        .await;
    batch
        .record_count("req", 1.0, [("b", "2"), ("a", "1")])
        .await;
    let owned = attrs!["b" => "2", "a" => "1"];
    batch.record_count("req", 1.0, &owned).await;
    // Different attributes, value type, name or metric type: new series.
    batch
        .record_count("req", 1.0, [("a", "1"), ("b", "3")])
        .await;
    batch
        .record_count("req", 1.0, [("a", Value::from(1)), ("b", Value::from("2"))])
        .await;
    batch.record_count("req", 1.0, [("a", "1")]).await;
    batch
        .record_count("req2", 1.0, [("a", "1"), ("b", "2")])
        .await;
    batch
        .record_gauge("req", 1.0, [("a", "1"), ("b", "2")])
        .await;
    batch
        .record_summary("req", 1.0, [("a", "1"), ("b", "2")])
        .await;
    assert_eq!(batch.series_count(), 7);

    let (metrics, _) = batch.flush().await;
    let same: Vec<_> = find(&metrics, MetricKind::Count, "req")
        .into_iter()
        .filter(|m| *m.attributes() == Attributes::from(attrs!["a" => "1", "b" => "2"]))
        .collect();
    assert_eq!(same.len(), 1);
    assert_eq!(count_value(same[0]), 3.0);
}

#[tokio::test]
async fn duplicate_keys_in_a_call_resolve_to_the_last_value() {
    let batch = MetricBatch::new();
    batch.record_count("d", 1.0, [("k", "x"), ("k", "y")]).await;
    batch.record_count("d", 1.0, [("k", "y")]).await;
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 1);
    assert_eq!(count_value(&metrics[0]), 2.0);
    assert_eq!(metrics[0].attributes().get("k"), Some(&Value::from("y")));
}

#[tokio::test]
async fn prebuilt_metrics_aggregate_into_the_batch() {
    let batch = MetricBatch::new();
    batch.record_count("jobs", 2.0, [("q", "a")]).await;
    batch
        .record_metric(
            CountMetric::new("jobs", 3.0, Duration::from_secs(1)).with_attribute("q", "a"),
        )
        .await;
    batch
        .record_metric(SummaryMetric::new(
            "lat",
            Summary::new(2, 10.0, 4.0, 6.0),
            Duration::from_secs(1),
        ))
        .await;
    batch.record_summary("lat", 1.0, ()).await;
    batch.record_metric(GaugeMetric::new("temp", 20.0)).await;
    let (metrics, _) = batch.flush().await;
    assert_eq!(
        count_value(find(&metrics, MetricKind::Count, "jobs")[0]),
        5.0
    );
    match find(&metrics, MetricKind::Summary, "lat")[0] {
        Metric::Summary(s) => assert_eq!(s.summary(), Summary::new(3, 11.0, 1.0, 6.0)),
        _ => unreachable!(),
    }
    // Counts and summaries from a batch take the common interval.
    assert!(
        find(&metrics, MetricKind::Count, "jobs")[0]
            .interval_ms()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn flush_reports_the_interval_and_starts_a_new_one() {
    let batch = MetricBatch::new();
    batch.record_count("c", 1.0, ()).await;
    tokio::time::advance(Duration::from_millis(1500)).await;
    let (first, c1) = batch.flush().await;
    assert_eq!(first.len(), 1);
    assert_eq!(c1.interval_ms(), Some(1500));

    tokio::time::advance(Duration::from_millis(700)).await;
    batch.record_count("c", 1.0, ()).await;
    tokio::time::advance(Duration::from_millis(300)).await;
    let (second, c2) = batch.flush().await;
    assert_eq!(second.len(), 1, "a flushed series starts again from zero");
    assert_eq!(count_value(&second[0]), 1.0);
    assert_eq!(c2.interval_ms(), Some(1000));
    let (t1, t2) = (c1.timestamp_ms().unwrap(), c2.timestamp_ms().unwrap());
    assert!(
        t2 >= t1 + 1500,
        "the second interval starts where the first ended"
    );

    let (third, c3) = batch.flush().await;
    assert!(third.is_empty());
    assert_eq!(
        c3.interval_ms(),
        Some(1),
        "a flush in the same millisecond still reports a positive interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recording_loses_no_count() {
    let batch = Arc::new(MetricBatch::new());
    let tasks = 16;
    let per_task = 2_000;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let batch = batch.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let route = ["/a", "/b", "/c", "/d"][i % 4];
                batch.record_count("hits", 1.0, [("route", route)]).await;
                batch
                    .record_summary("work", 1.0, [("task", (t % 2) as i64)])
                    .await;
                if i % 500 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Flush while recording is going on: nothing may fall between flushes.
    let mut total_hits = 0.0;
    let mut total_observations = 0;
    let mut collect = |metrics: Vec<Metric>| {
        for m in metrics {
            match m {
                Metric::Count(c) => total_hits += c.value(),
                Metric::Summary(s) => total_observations += s.summary().count,
                other => panic!("only counts and summaries: {other:?}"),
            }
        }
    };
    for _ in 0..5 {
        tokio::task::yield_now().await;
        collect(batch.flush().await.0);
    }
    for h in handles {
        h.await.unwrap();
    }
    collect(batch.flush().await.0);
    assert_eq!(total_hits, (tasks * per_task) as f64);
    assert_eq!(total_observations, (tasks * per_task) as u64);
}

#[tokio::test]
async fn bad_metric_input_is_refused_and_nothing_recorded_is_lost() {
    let batch = MetricBatch::new();
    batch.record_count("ok", 1.0, [("k", "v")]).await;

    let e = batch
        .try_record_count("ok", f64::NAN, [("k", "v")])
        .await
        .unwrap_err();
    assert!(matches!(e, RecordError::NonFiniteValue { .. }), "{e}");
    assert!(
        batch
            .try_record_gauge("g", f64::INFINITY, ())
            .await
            .is_err()
    );
    assert_eq!(
        batch.try_record_count("", 1.0, ()).await.unwrap_err(),
        RecordError::EmptyName
    );
    assert!(matches!(
        batch
            .try_record_count("m", 1.0, [("count", 1)])
            .await
            .unwrap_err(),
        RecordError::ReservedAttribute { .. }
    ));
    assert!(matches!(
        batch
            .try_record_count("m", 1.0, [("m", 1)])
            .await
            .unwrap_err(),
        RecordError::ReservedAttribute { .. }
    ));
    assert!(matches!(
        batch
            .try_record_count("m", 1.0, [("f", f64::NAN)])
            .await
            .unwrap_err(),
        RecordError::NonFiniteAttribute { .. }
    ));
    let many: Vec<(String, i64)> = (0..101).map(|i| (format!("k{i}"), i)).collect();
    assert!(matches!(
        batch.try_record_count("m", 1.0, &many).await.unwrap_err(),
        RecordError::TooManyAttributes {
            count: 101,
            limit: 100
        }
    ));
    assert_eq!(
        batch
            .try_record_metric(SummaryMetric::new(
                "s",
                Summary::new(1, 1.0, 2.0, 1.0),
                Duration::ZERO
            ))
            .await
            .unwrap_err(),
        RecordError::InvalidSummary
    );
    assert_eq!(batch.record_stats().items_dropped_invalid, 8);

    // Over-long string values are truncated to 4096 characters, and counted.
    let long = "x".repeat(5000);
    batch.record_count("ok", 1.0, [("k", long.as_str())]).await;
    batch.record_count("ok", 1.0, [("k", long.as_str())]).await;
    assert_eq!(batch.record_stats().values_truncated, 2);

    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 2);
    let plain = metrics
        .iter()
        .find(|m| m.attributes().get("k") == Some(&Value::from("v")))
        .expect("the series recorded before the bad calls");
    assert_eq!(count_value(plain), 1.0);
    let truncated = metrics
        .iter()
        .find(|m| matches!(m.attributes().get("k"), Some(Value::String(s)) if s.len() == 4096))
        .expect("truncated series");
    assert_eq!(count_value(truncated), 2.0);
}

#[tokio::test]
async fn series_limit_drops_new_series_only() {
    // Two names, each with the room for its overflow series.
    let batch = MetricBatch::builder().max_series(4).build();
    batch.record_count("a", 1.0, ()).await;
    batch.record_count("b", 1.0, ()).await;
    assert_eq!(
        batch.try_record_count("c", 1.0, ()).await.unwrap_err(),
        RecordError::SeriesLimitReached { limit: 4 }
    );
    batch.record_count("a", 1.0, ()).await;
    assert_eq!(batch.record_stats().series_dropped_limit, 1);
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 2);
    batch.record_count("c", 1.0, ()).await;
}

#[tokio::test]
async fn item_batches_validate_and_cap() {
    let events = EventBatch::builder().capacity(2).build();
    events.record(Event::new("A")).await;
    assert!(matches!(
        events.try_record(Event::new("bad type")).await.unwrap_err(),
        RecordError::InvalidEventType { .. }
    ));
    assert!(events.try_record(Event::new("")).await.is_err());
    assert!(matches!(
        events
            .try_record(Event::new("A").with_attribute("x", f64::NEG_INFINITY))
            .await
            .unwrap_err(),
        RecordError::NonFiniteAttribute { .. }
    ));
    events.record(Event::new("B")).await;
    assert_eq!(
        events.try_record(Event::new("C")).await.unwrap_err(),
        RecordError::BufferFull { capacity: 2 }
    );
    let stats = events.record_stats();
    assert_eq!(
        (stats.items_dropped_invalid, stats.items_dropped_buffer_full),
        (3, 1)
    );
    let (items, _) = events.flush().await;
    let types: Vec<_> = items.iter().map(Event::event_type).collect();
    assert_eq!(
        types,
        ["A", "B"],
        "the buffered items are kept, the newest is dropped"
    );

    let logs = LogBatch::new();
    let long = "y".repeat(5000);
    logs.record(Log::new("m").with_attribute("big", long.as_str()))
        .await;
    let (items, _) = logs.flush().await;
    match items[0].attributes().get("big") {
        Some(Value::String(s)) => assert_eq!(s.chars().count(), 4094),
        other => panic!("{other:?}"),
    }

    let spans = SpanBatch::new();
    assert_eq!(
        spans.try_record(Span::new("")).await.unwrap_err(),
        RecordError::EmptyName
    );
    let too_many: Attributes = (0..201).map(|i| (format!("k{i}"), i)).collect();
    assert!(matches!(
        spans
            .try_record(Span::new("s").with_attributes(too_many))
            .await
            .unwrap_err(),
        RecordError::TooManyAttributes { limit: 200, .. }
    ));
    assert!(matches!(
        spans
            .try_record(Span::new("s").with_event(SpanEvent::new("e").with_attribute("", 1)))
            .await
            .unwrap_err(),
        RecordError::EmptyAttributeKey
    ));
    spans.record(Span::new("s")).await;
    assert_eq!(spans.len().await, 1);
}

#[tokio::test]
async fn invalid_common_attributes_are_removed() {
    let batch = MetricBatch::builder()
        .common_attributes(attrs!["ok" => 1, "nan" => f64::NAN, "" => "empty key"])
        .build();
    assert_eq!(
        batch.common_attributes(),
        Some(&Attributes::from(attrs!["ok" => 1]))
    );
}

#[tokio::test]
async fn an_aggregate_never_overflows_to_infinity() {
    let batch = MetricBatch::new();
    batch.record_count("big", f64::MAX, ()).await;
    assert!(matches!(
        batch
            .try_record_count("big", f64::MAX, ())
            .await
            .unwrap_err(),
        RecordError::AggregateOverflow { .. }
    ));
    batch.record_summary("s", f64::MAX, ()).await;
    assert!(batch.try_record_summary("s", f64::MAX, ()).await.is_err());
    batch.record_summary("s", 1.0, ()).await;
    assert_eq!(batch.record_stats().items_dropped_invalid, 2);

    let (metrics, common) = batch.flush().await;
    let json = serde_json::to_string(&metrics).unwrap();
    assert!(!json.contains("null"), "{json}");
    assert_eq!(
        count_value(find(&metrics, MetricKind::Count, "big")[0]),
        f64::MAX
    );
    match find(&metrics, MetricKind::Summary, "s")[0] {
        Metric::Summary(s) => assert_eq!(s.summary().count, 2),
        _ => unreachable!(),
    }
    assert!(common.interval_ms().is_some());
}

#[tokio::test]
async fn a_closed_metric_batch_refuses_and_counts_but_keeps_what_it_holds() {
    let batch = MetricBatch::new();
    batch.record_count("before", 1.0, ()).await;
    batch.close().await;
    assert_eq!(
        batch.try_record_count("before", 1.0, ()).await.unwrap_err(),
        RecordError::Closed
    );
    assert_eq!(
        batch.try_record_gauge("new", 1.0, ()).await.unwrap_err(),
        RecordError::Closed
    );
    assert_eq!(batch.record_stats().items_dropped_closed, 2);
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 1);
    assert_eq!(count_value(&metrics[0]), 1.0);
}

#[tokio::test]
async fn flushed_metrics_skip_validation_on_send_but_changed_ones_do_not() {
    use newrelic_telemetry::client::Metrics;

    let server = support::server().await;
    let client = support::client::<Metrics>(&server);
    let batch = MetricBatch::new();
    batch.record_count("ok", 1.0, [("k", "v")]).await;
    batch.record_gauge("level", 2.0, ()).await;
    let (mut metrics, common) = batch.flush().await;
    let Some(Metric::Count(count)) = metrics
        .iter()
        .find(|m| m.kind() == MetricKind::Count)
        .cloned()
    else {
        panic!("no count in {metrics:?}");
    };
    // Changed after the flush: validated again, and refused (reserved key).
    metrics.push(count.with_attribute("count", 1).into());
    // Built by hand: validated as always.
    metrics.push(GaugeMetric::new("", 1.0).into());

    let error = client.send_batch(metrics, common).await.unwrap_err();
    assert_eq!(error.report().items_sent(), 2);
    assert_eq!(error.report().items_dropped(), 2);
    let names: Vec<_> = server
        .metrics()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"ok".to_owned()) && names.contains(&"level".to_owned()));
}
