//! Image rows: published base images that VMs are created from.

use crate::error::StoreError;
use crate::rows::{to_sql_int, ImageRow, IMAGE_COLUMNS};
use crate::store::Store;
use crate::vms::exists;
use banger_model::ImageRecord;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// The run config as stored: JSON, or NULL when empty.
fn run_config_json(img: &ImageRecord) -> Result<Option<String>, StoreError> {
    if img.run_config.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&img.run_config)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("image {}: run config: {e}", img.name)))
}

impl Store {
    /// Record a published image and the cached blobs it was made from (kept by
    /// `image cache prune`). [`StoreError::ImageNameTaken`] if the name is in use;
    /// the caller picks the id (see [`crate::new_id`]).
    pub fn insert_image(&self, img: &ImageRecord, blobs: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if exists(&tx, "SELECT 1 FROM images WHERE name = ?1", &img.name)? {
            return Err(StoreError::ImageNameTaken(img.name.clone()));
        }
        tx.execute(
            &format!(
                "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                img.id,
                img.name,
                img.source,
                img.kernel_release,
                to_sql_int("image size", img.size_bytes)?,
                img.created_at,
                img.kernel,
                run_config_json(img)?,
            ],
        )?;
        for digest in blobs {
            tx.execute(
                "INSERT OR IGNORE INTO image_blobs (image_id, digest) VALUES (?1, ?2)",
                params![img.id, digest],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The image named `name`.
    pub fn get_image_by_name(&self, name: &str) -> Result<ImageRecord, StoreError> {
        self.query_image("name", name)?
            .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))
    }

    /// The image with id `id`.
    pub fn get_image(&self, id: &str) -> Result<ImageRecord, StoreError> {
        self.query_image("id", id)?
            .ok_or_else(|| StoreError::ImageIdNotFound(id.to_string()))
    }

    /// All images, oldest first (ties broken by name).
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map([], ImageRow::read)?;
        rows.map(|r| r.map_err(StoreError::from)?.into_record())
            .collect()
    }

    /// Record an image's run settings (an OCI image's config, applied to commands run
    /// in its VMs).
    pub fn set_image_run_config(
        &self,
        id: &str,
        run: &banger_model::RunConfig,
    ) -> Result<(), StoreError> {
        let json = if run.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(run)
                    .map_err(|e| StoreError::Invalid(format!("image {id}: run config: {e}")))?,
            )
        };
        let n = self.conn().execute(
            "UPDATE images SET run_config = ?1 WHERE id = ?2",
            rusqlite::params![json, id],
        )?;
        if n == 0 {
            return Err(StoreError::ImageIdNotFound(id.to_string()));
        }
        Ok(())
    }

    /// Forget an image. Refused with [`StoreError::ImageInUse`] while any VM
    /// was created from it, since its overlay disks depend on the base.
    pub fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let name: String = tx
            .query_row("SELECT name FROM images WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::ImageIdNotFound(id.to_string()))?;
        let users: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM vms WHERE image_id = ?1 ORDER BY name")?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if !users.is_empty() {
            return Err(StoreError::ImageInUse {
                image: name,
                vms: users,
            });
        }
        tx.execute("DELETE FROM image_blobs WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Every cached blob digest some image was made from.
    pub fn referenced_blobs(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT digest FROM image_blobs ORDER BY digest")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The cached blobs image `id` was made from.
    pub fn image_blobs(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT digest FROM image_blobs WHERE image_id = ?1 ORDER BY digest")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn query_image(&self, column: &str, value: &str) -> Result<Option<ImageRecord>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE {column} = ?1"),
                [value],
                ImageRow::read,
            )
            .optional()?;
        row.map(ImageRow::into_record).transpose()
    }
}
