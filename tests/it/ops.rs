//! Health, readiness and metrics.

use crate::helpers::each_backend;

#[test]
fn health_readiness_and_metrics() {
    each_backend(|app| {
        let res = app.get("/healthz");
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().unwrap(), "ok\n");
        let res = app.get("/readyz");
        assert_eq!(res.status(), 200, "{}", app.backend);
        assert_eq!(res.text().unwrap(), "ready\n");
        app.get("/");
        app.get("/pipelines/nope");
        let res = app.get("/metrics");
        assert_eq!(res.status(), 200);
        let text = res.text().unwrap();
        assert!(
            text.contains(
                "slipway_http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("route=\"/pipelines/{pipeline}\",method=\"GET\",status=\"404\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "slipway_http_request_duration_seconds_bucket{route=\"/\",le=\"+Inf\"} 1"
            )
        );
        assert!(text.contains("slipway_db_pool_connections "));
    });
}
