//! Matching outside requests to a chain's routes the way spright's gateway does: the longest
//! path prefix wins, and among equal prefixes a route naming the method beats "any method".

use spright_core::chain::{Chain, Route};

/// What a request matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a> {
    /// The route's functions, in order (one for RPC-style routes).
    Route(&'a [usize]),
    /// No route has this path.
    NotFound,
    /// Some route has this path, none with this method.
    WrongMethod,
}

pub struct Routes {
    /// Longest prefix first; each route's functions as indices into `chain.functions`.
    routes: Vec<(Option<String>, String, Vec<usize>)>,
}

impl Routes {
    pub fn new(chain: &Chain) -> Routes {
        let index = |id: u16| {
            chain
                .functions
                .iter()
                .position(|f| f.id == id)
                .expect("a validated chain's routes name its functions")
        };
        let mut routes: Vec<_> = chain
            .routes
            .iter()
            .map(
                |Route {
                     method,
                     path,
                     sequence,
                 }| {
                    let functions = sequence.iter().map(|&id| index(id)).collect();
                    (method.clone(), path.clone(), functions)
                },
            )
            .collect();
        // Longest prefix first, as matched (without a trailing '/'); then a route for one
        // method before an any-method route of the same prefix.
        let matched_len = |p: &str| p.trim_end_matches('/').len();
        routes.sort_by(|(ma, pa, _), (mb, pb, _)| {
            matched_len(pb)
                .cmp(&matched_len(pa))
                .then(mb.is_some().cmp(&ma.is_some()))
        });
        Routes { routes }
    }

    pub fn find(&self, method: &str, path: &str) -> Match<'_> {
        let mut path_known = false;
        for (m, prefix, functions) in &self.routes {
            if !under(prefix, path) {
                continue;
            }
            if m.as_deref().is_none_or(|m| m == method) {
                return Match::Route(functions);
            }
            path_known = true;
        }
        if path_known {
            Match::WrongMethod
        } else {
            Match::NotFound
        }
    }
}

/// Whether `path` is `prefix` or below it: `/cart` covers `/cart/x` but not `/cartoon`.
fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain::parse(
            r#"
chain: t
pool: { buffers: 8, buffer_size: 4KiB }
functions:
  - { name: a, id: 1 }
  - { name: b, id: 2 }
  - { name: c, id: 3 }
routes:
  - { path: /, function: a }
  - { method: POST, path: /cart, function: b }
  - { path: /cart/, function: c }
  - { method: PUT, path: /seq/, sequence: [a, b, c] }
"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_then_method_whatever_the_trailing_slash() {
        let r = Routes::new(&chain());
        assert_eq!(r.find("GET", "/anything"), Match::Route(&[0]));
        assert_eq!(r.find("POST", "/cart/1"), Match::Route(&[1]));
        assert_eq!(r.find("GET", "/cart"), Match::Route(&[2]));
        assert_eq!(r.find("GET", "/cartoon"), Match::Route(&[0]));
        assert_eq!(r.find("PUT", "/seq"), Match::Route(&[0, 1, 2]));
    }

    #[test]
    fn unknown_paths_and_methods() {
        let c = Chain::parse(
            "chain: t\npool: { buffers: 8, buffer_size: 4KiB }\nfunctions: [{ name: a, id: 1 }]\n\
             routes: [{ method: POST, path: /x, function: a }]\n",
            "test",
        )
        .unwrap();
        let r = Routes::new(&c);
        assert_eq!(r.find("GET", "/x"), Match::WrongMethod);
        assert_eq!(r.find("POST", "/y"), Match::NotFound);
        assert_eq!(r.find("POST", "/x/y"), Match::Route(&[0]));
    }
}
