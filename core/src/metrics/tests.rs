//! The registry on `prometheus-client`: text format 0.0.4, counters named
//! with `_total`, escaped label values, histograms with `+Inf`.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByNode {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByState {
    state: PathState,
}

#[test]
fn render_is_text_format_0_0_4_with_escaped_label_values() {
    let r = Registry::new();
    let hits = Family::<ByNode, Counter>::default();
    r.register("test_hits", "Hits \\ by node\nsecond line.", hits.clone());
    let lat = Family::<ByNode, Histogram, _>::new_with_constructor(|| Histogram::new([0.5]));
    r.register("test_latency_seconds", "Test latency.", lat.clone());
    hits.get_or_create(&ByNode {
        node: "b\"\\\n".into(),
    })
    .inc_by(3);
    lat.get_or_create(&ByNode { node: "a".into() })
        .observe(0.25);
    let text = r.render();
    let want = "# HELP test_hits_total Hits \\\\ by node\\nsecond line.\n\
                # TYPE test_hits_total counter\n\
                test_hits_total{node=\"b\\\"\\\\\\n\"} 3\n\
                # HELP test_latency_seconds Test latency.\n\
                # TYPE test_latency_seconds histogram\n\
                test_latency_seconds_bucket{node=\"a\",le=\"0.5\"} 1\n\
                test_latency_seconds_bucket{node=\"a\",le=\"+Inf\"} 1\n\
                test_latency_seconds_sum{node=\"a\"} 0.25\n\
                test_latency_seconds_count{node=\"a\"} 1\n";
    assert_eq!(text, want, "got:\n{text}");
    assert!(!text.contains("# EOF"), "no OpenMetrics trailer in 0.0.4");
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}

#[test]
fn path_states_are_label_values() {
    let r = Registry::new();
    let states = Family::<ByState, Gauge>::default();
    r.register("test_state", "State.", states.clone());
    for s in PathState::ALL {
        states.get_or_create(&ByState { state: s }).set(1);
    }
    let text = r.render();
    for s in PathState::ALL {
        let line = format!("test_state{{state=\"{}\"}} 1", s.as_str());
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}
