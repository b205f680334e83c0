from ticketing_payments.service import SERVICE

SERVICE.main()
