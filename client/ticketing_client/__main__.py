from ticketing_client.service import SERVICE

SERVICE.main()
