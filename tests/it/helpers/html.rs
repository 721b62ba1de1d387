//! Reading pages as a person sees them: texts, attributes, form fields.

use scraper::{Html, Selector};

/// The texts of every element matching `selector`, whitespace folded.
pub fn texts(html: &Html, selector: &str) -> Vec<String> {
    let sel = Selector::parse(selector).expect("selector");
    html.select(&sel)
        .map(|e| {
            e.text()
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The `attr` of every element matching `selector`.
pub fn attrs(html: &Html, selector: &str, attr: &str) -> Vec<String> {
    let sel = Selector::parse(selector).expect("selector");
    html.select(&sel)
        .filter_map(|e| e.value().attr(attr).map(str::to_string))
        .collect()
}

/// The value of the first hidden `csrf` input of a page.
pub fn csrf_of(html: &Html) -> String {
    attrs(html, "input[name=csrf]", "value")
        .into_iter()
        .next()
        .expect("a csrf field")
}
