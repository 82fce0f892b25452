//! The catalog index parser against an http and a path base.
#![no_main]

use banger_image::catalog::{CatalogIndex, Location};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bases = [
        Location::Url("https://catalog.example/c/index.json".into()),
        Location::Path("/srv/catalog/index.json".into()),
    ];
    for base in &bases {
        if let Ok(index) = CatalogIndex::parse(data, base) {
            // Every image names a kernel of the same index.
            for image in index.images() {
                assert!(index.kernel(&image.kernel).is_ok());
            }
            // A remote index never points at local files.
            if matches!(base, Location::Url(_)) {
                for k in index.kernels() {
                    assert!(matches!(k.kernel.url, Location::Url(_)));
                }
            }
        }
    }
});
