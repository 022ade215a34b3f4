//! Product catalog: lists and looks up products.

use crate::data::catalog;
use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service};
use std::sync::Arc;

/// What a lookup of an unknown product fails with (the frontend answers 404 on it).
pub const NOT_FOUND: &str = "no product with id";

pub fn service() -> Service {
    let products = Arc::new(catalog());
    let list = ProductList {
        products: products.iter().copied().collect(),
    };
    Service::new("productcatalog")
        .method::<ListProducts, _, _>(move |_: Arg<Empty>, _: Cx| async move { Ok(list) })
        .method::<GetProduct, _, _>(move |req: Arg<ProductId>, _: Cx| {
            let products = products.clone();
            async move {
                products
                    .iter()
                    .find(|p| p.id == req.id)
                    .copied()
                    .ok_or_else(|| format!("{NOT_FOUND} {:?}", req.id.as_str()).into())
            }
        })
}
