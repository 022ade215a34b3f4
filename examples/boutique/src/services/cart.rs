//! Cart: items per user, kept in memory (the original keeps them in Redis).

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Empty, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most of one product a cart holds (keeps every sum of quantities far from overflow).
pub const MAX_QUANTITY: u32 = 1000;

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
    if req.item.quantity > MAX_QUANTITY {
        return Err(format!("at most {MAX_QUANTITY} of one product").into());
    }
    let mut carts = carts.lock().unwrap();
    let items = carts.entry(req.user_id.as_str().to_owned()).or_default();
    if let Some(i) = items
        .iter_mut()
        .find(|i| i.product_id == req.item.product_id)
    {
        i.quantity = i
            .quantity
            .checked_add(req.item.quantity)
            .filter(|&q| q <= MAX_QUANTITY)
            .ok_or_else(|| format!("at most {MAX_QUANTITY} of one product"))?;
    } else if items.len() < MAX_CART_ITEMS {
        items.push(req.item);
    } else {
        return Err(format!("a cart holds at most {MAX_CART_ITEMS} products").into());
    }
    Ok(Empty::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spright_sdk::rpc::Str;

    fn add(carts: &Carts, product: &str, quantity: u32) -> Result<Empty, spright_sdk::Error> {
        add_item(
            carts,
            &AddItemRequest {
                user_id: Str::truncated("u"),
                item: CartItem {
                    product_id: Str::truncated(product),
                    quantity,
                },
            },
        )
    }

    #[test]
    fn quantities_add_up_to_a_cap_and_products_to_the_cart_size() {
        let carts = Carts::default();
        add(&carts, "a", 600).unwrap();
        assert!(add(&carts, "a", 600)
            .unwrap_err()
            .to_string()
            .contains("at most 1000"));
        assert!(add(&carts, "b", u32::MAX).is_err());
        assert!(add(&carts, "b", 0).is_err());
        assert_eq!(
            carts.lock().unwrap()["u"],
            vec![CartItem {
                product_id: Str::truncated("a"),
                quantity: 600
            }]
        );
        for n in 1..MAX_CART_ITEMS {
            add(&carts, &format!("p{n}"), 1).unwrap();
        }
        assert!(add(&carts, "one-too-many", 1)
            .unwrap_err()
            .to_string()
            .contains("at most 32"));
    }
}
