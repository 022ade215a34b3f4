//! Matching HTTP requests to the chain's routes: method, then the longest path prefix.

use spright_core::chain::Route;

pub struct RouteTable {
    /// (route index, route), longest path first so the first match is the longest prefix.
    routes: Vec<(u16, Route)>,
    /// "METHOD /path" per route index, for metrics.
    labels: Vec<String>,
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> RouteTable {
        let labels = routes
            .iter()
            .map(|r| format!("{} {}", r.method.as_deref().unwrap_or("*"), r.path))
            .collect();
        let mut routes: Vec<(u16, Route)> = routes
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, r)| (i as u16, r))
            .collect();
        // Longer prefixes first; among equals, a route naming the method before "any".
        routes.sort_by(|(_, a), (_, b)| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(b.method.is_some().cmp(&a.method.is_some()))
        });
        RouteTable { routes, labels }
    }

    /// The metrics label of route `index`.
    pub fn label(&self, index: u16) -> &str {
        &self.labels[index as usize]
    }

    /// The route for `method` and `path`, as (index, route).
    pub fn find(&self, method: &str, path: &str) -> Option<(u16, &Route)> {
        self.routes
            .iter()
            .find(|(_, r)| {
                prefix_matches(&r.path, path) && r.method.as_deref().is_none_or(|m| m == method)
            })
            .map(|(i, r)| (*i, r))
    }

    /// Whether any route serves `path` with some other method (for 405 rather than 404).
    pub fn path_known(&self, path: &str) -> bool {
        self.routes
            .iter()
            .any(|(_, r)| prefix_matches(&r.path, path))
    }
}

/// `/cart` matches `/cart`, `/cart/` and `/cart/x`, not `/cartoon`. `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Option<&str>, path: &str, f: u16) -> Route {
        Route {
            method: method.map(str::to_owned),
            path: path.into(),
            sequence: vec![f],
        }
    }

    #[test]
    fn longest_prefix_and_method_win() {
        let t = RouteTable::new(&[
            route(None, "/", 1),
            route(Some("POST"), "/cart", 2),
            route(None, "/cart", 3),
            route(None, "/cart/checkout", 4),
        ]);
        let f = |m: &str, p: &str| t.find(m, p).map(|(_, r)| r.sequence[0]);
        assert_eq!(f("GET", "/"), Some(1));
        assert_eq!(f("GET", "/product/1"), Some(1));
        assert_eq!(f("POST", "/cart"), Some(2));
        assert_eq!(f("GET", "/cart"), Some(3));
        assert_eq!(f("POST", "/cart/checkout"), Some(4));
        assert_eq!(f("GET", "/cartoon"), Some(1), "not a /cart prefix");
    }

    #[test]
    fn unknown_paths_and_methods() {
        let t = RouteTable::new(&[route(Some("POST"), "/render", 1)]);
        assert!(t.find("GET", "/render").is_none());
        assert!(t.path_known("/render"));
        assert!(t.find("POST", "/other").is_none());
        assert!(!t.path_known("/other"));
        assert_eq!(t.find("POST", "/render/x").map(|(i, _)| i), Some(0));
    }
}
