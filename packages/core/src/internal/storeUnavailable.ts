import type { SqlError } from "@effect/sql"
import * as Errors from "../Errors.js"

/** A SQL store's own SQL error as `StoreUnavailable`, naming the operation it failed. */
export const storeUnavailable = (operation: string) => (error: SqlError.SqlError) =>
  new Errors.StoreUnavailable({ operation, message: error.message, cause: error })
