//! The resolvers of policies with their own registry credentials (pure bookkeeping;
//! the resolvers do the I/O).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::registry::{Credentials, Registry};
use crate::resolve::Resolver;

/// Each policy's credentials and the resolver built with them.
type ByPolicy<R> = HashMap<String, (Credentials, Arc<Resolver<R>>)>;

/// The resolvers of policies that bring their own registry credentials: one per
/// policy, with its own caches and registry connections, kept while its credentials
/// stay the same and replaced when they change (a rotated Secret).
pub struct OwnResolvers<R> {
    by_policy: Mutex<ByPolicy<R>>,
}

impl<R> Default for OwnResolvers<R> {
    fn default() -> Self {
        Self {
            by_policy: Mutex::default(),
        }
    }
}

impl<R: Registry> OwnResolvers<R> {
    /// The resolver of the policy `key` (`namespace/name`) with `credentials` over
    /// `base`'s; `None` when `base` takes no other credentials.
    pub fn get(&self, key: &str, base: &R, credentials: &Credentials) -> Option<Arc<Resolver<R>>> {
        let mut map = self
            .by_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((known, resolver)) = map.get(key)
            && known == credentials
        {
            return Some(Arc::clone(resolver));
        }
        let resolver = Arc::new(Resolver::new(base.with_credentials(credentials)?));
        map.insert(key.to_owned(), (credentials.clone(), Arc::clone(&resolver)));
        Some(resolver)
    }

    /// Forgets what every policy's resolver cached about an image.
    pub fn invalidate(&self, canonical: &str) {
        let map = self
            .by_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, resolver) in map.values() {
            resolver.invalidate(canonical);
        }
    }
}
