//! Ads: by the categories of the page's context, or a random one.

use crate::data::ADS;
use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, List, Service, Str};

pub fn service() -> Service {
    Service::new("ad").method::<GetAds, _, _>(|req: Arg<AdRequest>, _: Cx| async move {
        let ad = |&(_, url, text): &(&str, &str, &str)| Ad {
            redirect_url: Str::truncated(url),
            text: Str::truncated(text),
        };
        let mut ads: List<Ad, 4> = ADS
            .iter()
            .filter(|(category, _, _)| {
                req.context_keys
                    .as_slice()
                    .iter()
                    .any(|k| k.as_str() == *category)
            })
            .map(ad)
            .collect();
        if ads.is_empty() {
            let _ = ads.push(ad(&ADS[fastrand::usize(..ADS.len())]));
        }
        Ok(Ads { ads })
    })
}
