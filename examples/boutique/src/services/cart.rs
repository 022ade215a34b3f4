//! Cart: items per user, kept in memory (the original keeps them in Redis).

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Carts = Arc<Mutex<HashMap<String, Vec<CartItem>>>>;

pub fn service() -> Service {
    let carts: Carts = Arc::default();
    let (add, get, empty) = (carts.clone(), carts.clone(), carts);
    Service::new("cart")
        .method::<AddItem, _, _>(move |req: Arg<AddItemRequest>, _: Cx| {
            let result = add_item(&add, &req);
            async move { result }
        })
        .method::<GetCart, _, _>(move |req: Arg<UserId>, _: Cx| {
            let items = get
                .lock()
                .unwrap()
                .get(req.user_id.as_str())
                .cloned()
                .unwrap_or_default();
            let cart = Cart {
                user_id: req.user_id,
                items: items.into_iter().collect(),
            };
            async move { Ok(cart) }
        })
        .method::<EmptyCart, _, _>(move |req: Arg<UserId>, _: Cx| {
            empty.lock().unwrap().remove(req.user_id.as_str());
            async { Ok(Empty::default()) }
        })
}

fn add_item(carts: &Carts, req: &AddItemRequest) -> Result<Empty, spright_sdk::Error> {
    if req.item.quantity == 0 || req.user_id.is_empty() || req.item.product_id.is_empty() {
        return Err("an item needs a user, a product and a quantity".into());
    }
    let mut carts = carts.lock().unwrap();
    let items = carts.entry(req.user_id.as_str().to_owned()).or_default();
    if let Some(i) = items
        .iter_mut()
        .find(|i| i.product_id == req.item.product_id)
    {
        i.quantity = i.quantity.saturating_add(req.item.quantity);
    } else if items.len() < MAX_CART_ITEMS {
        items.push(req.item);
    } else {
        return Err(format!("a cart holds at most {MAX_CART_ITEMS} products").into());
    }
    Ok(Empty::default())
}
