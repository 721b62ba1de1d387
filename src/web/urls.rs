//! Every URL of the pages has one builder here, so links never drift from
//! the route table in `web::routes`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn board() -> String {
    "/".to_string()
}

pub fn pipeline(pipeline: &str) -> String {
    format!("/pipelines/{}", seg(pipeline))
}

pub fn releases(pipeline: &str) -> String {
    format!("/pipelines/{}/releases", seg(pipeline))
}

pub fn release(pipeline: &str, version: &str) -> String {
    format!("/pipelines/{}/releases/{}", seg(pipeline), seg(version))
}

pub fn deployment(pipeline: &str, version: &str, id: i64) -> String {
    format!("{}/deployments/{id}", release(pipeline, version))
}

pub fn builds(pipeline: &str) -> String {
    format!("/pipelines/{}/builds", seg(pipeline))
}

pub fn build(pipeline: &str, number: i64) -> String {
    format!("/pipelines/{}/builds/{number}", seg(pipeline))
}

/// An artifact's download URL: the release, then its workspace-relative
/// path with each segment encoded.
pub fn artifact(pipeline: &str, version: &str, path: &str) -> String {
    let path: Vec<String> = path.split('/').map(seg).collect();
    format!(
        "{}/artifacts/{}",
        release(pipeline, version),
        path.join("/")
    )
}

pub fn stage(pipeline: &str, stage: &str) -> String {
    format!("/pipelines/{}/stages/{}", seg(pipeline), seg(stage))
}

/// The stage's configuration form (the overview is [`stage`]).
pub fn stage_configure(pipeline: &str, stage_name: &str) -> String {
    format!("{}/configure", stage(pipeline, stage_name))
}

/// Where a Deploy / Promote form of a stage posts.
pub fn stage_deploy(pipeline: &str, stage_name: &str) -> String {
    format!("{}/deploy", stage(pipeline, stage_name))
}

/// Where the "Roll back STAGE" form posts.
pub fn stage_rollback(pipeline: &str, stage_name: &str) -> String {
    format!("{}/rollback", stage(pipeline, stage_name))
}

/// Where a deployment's Redeploy / Retry form posts.
pub fn deployment_redeploy(pipeline: &str, version: &str, id: i64) -> String {
    format!("{}/redeploy", deployment(pipeline, version, id))
}

/// Where a failed build's Retry form posts.
pub fn build_retry(pipeline: &str, number: i64) -> String {
    format!("{}/retry", build(pipeline, number))
}

pub fn environments() -> String {
    "/environments".to_string()
}

/// The Swap form of an app on the environments page.
pub fn app_swap(app: &str) -> String {
    format!("/environments/{}/swap", seg(app))
}

pub fn app_swap_confirm(app: &str) -> String {
    format!("{}/confirm", app_swap(app))
}

pub fn app_swap_cancel(app: &str) -> String {
    format!("{}/cancel", app_swap(app))
}

/// A query string from pairs, leaving out empty values; "" when none is left.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", seg(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The gate status page.
pub fn gates() -> String {
    "/gates".to_string()
}

/// The page of one gate run.
pub fn gate_run(id: i64) -> String {
    format!("/gates/{id}")
}

/// The approval inbox.
pub fn approvals() -> String {
    "/approvals".to_string()
}

/// The page of one approval.
pub fn approval(id: i64) -> String {
    format!("/approvals/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(
            release("space-game-web", "1.0.7+build/2"),
            "/pipelines/space-game-web/releases/1.0.7%2Bbuild%2F2"
        );
        assert_eq!(query(&[("branch", "main"), ("state", "")]), "?branch=main");
        assert_eq!(query(&[("state", "")]), "");
    }
}
