//! Recommendation: up to five catalog products the user does not already have.

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service};

pub fn service() -> Service {
    Service::new("recommendation").method::<ListRecommendations, _, _>(
        |req: Arg<RecommendationRequest>, cx: Cx| async move {
            let catalog = cx.call::<ListProducts>(&Empty::default()).await?;
            let mut candidates: Vec<_> = catalog
                .products
                .as_slice()
                .iter()
                .filter(|p| !req.product_ids.as_slice().contains(&p.id))
                .map(|p| p.id)
                .collect();
            fastrand::shuffle(&mut candidates);
            Ok(ProductIds {
                product_ids: candidates.into_iter().take(5).collect(),
            })
        },
    )
}
