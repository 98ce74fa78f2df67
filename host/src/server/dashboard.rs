//! The dashboard: a single page (`dashboard/index.html`, `app.js`,
//! `style.css`) embedded in the binary, so it works on a machine with no
//! network. No framework types here: the router asks [`asset`] for a path.
//!
//! The page reads everything from the `/api/v1` routes with the server's
//! token (taken once from the URL fragment `#token=...`, then kept in the
//! tab's sessionStorage) and follows runs live over the two `/events`
//! streams, which accept the token as a `?token=` query parameter because
//! `EventSource` cannot send headers.

/// `(path, content type, bytes)` of every embedded file.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("dashboard/index.html")),
    ("/assets/app.js", "text/javascript; charset=utf-8", include_bytes!("dashboard/app.js")),
    ("/assets/style.css", "text/css; charset=utf-8", include_bytes!("dashboard/style.css")),
];

/// The content type and bytes of the dashboard file at `path` (`/`,
/// `/index.html`, `/assets/app.js`, `/assets/style.css`), or `None`.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|(p, _, _)| *p == path).map(|&(_, content_type, bytes)| (content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths [`asset`] serves (index first).
    fn paths() -> impl Iterator<Item = &'static str> {
        ASSETS.iter().map(|(p, _, _)| *p)
    }

    #[test]
    fn every_asset_is_served_non_empty_with_its_type() {
        for path in paths() {
            let (content_type, bytes) = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
            assert!(!bytes.is_empty(), "{path} is empty");
            assert!(std::str::from_utf8(bytes).is_ok(), "{path} is not UTF-8");
            assert!(content_type.ends_with("charset=utf-8"), "{path}: {content_type}");
        }
        assert_eq!(asset("/").unwrap().0, "text/html; charset=utf-8");
        assert_eq!(asset("/index.html"), asset("/"));
        assert_eq!(asset("/assets/app.js").unwrap().0, "text/javascript; charset=utf-8");
        assert_eq!(asset("/assets/style.css").unwrap().0, "text/css; charset=utf-8");
        assert_eq!(asset("/assets/nope.js"), None);
        assert_eq!(asset("/assets/../index.html"), None);
    }

    #[test]
    fn index_references_the_other_assets_and_nothing_remote() {
        let index = std::str::from_utf8(asset("/").unwrap().1).unwrap();
        for path in paths().filter(|p| *p != "/") {
            // Relative to the page, so the dashboard also works under a path prefix.
            let relative = path.trim_start_matches('/');
            assert!(index.contains(&format!("\"{relative}\"")), "index.html does not load {relative}");
        }
        for path in paths() {
            let text = std::str::from_utf8(asset(path).unwrap().1).unwrap();
            for remote in ["http://", "https://", "//fonts.", "cdn"] {
                // app.js checks links in Markdown for these two schemes; nothing is loaded from them.
                if path == "/assets/app.js" && remote.starts_with("http") {
                    continue;
                }
                assert!(!text.contains(remote), "{path} mentions {remote:?}: the dashboard must work offline");
            }
        }
    }

    #[test]
    fn the_script_never_writes_markup_from_strings() {
        let app = std::str::from_utf8(asset("/assets/app.js").unwrap().1).unwrap();
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!app.contains(sink), "app.js uses {sink}: build nodes with text instead");
        }
    }
}
